#pragma once
#include <napi.h>

#include <memory>

#include "dirty_log.h"

namespace vhost_tap {

// The DirtyLogSlot of a NativeDirtyLogSlot object; nullptr (with a JS exception) if it is not one.
std::shared_ptr<DirtyLogSlot> DirtyLogSlotOf(Napi::Env env, Napi::Value value);

}  // namespace vhost_tap
