// A small test runner for the C++ unit tests of native/core: no dependency
// beyond the C++ standard library, so the tests build wherever the addon does
// (cmake and g++ only).
//
//   TEST("what the case shows") { CHECK(...); CHECK_EQ(a, b); REQUIRE(...); }
//
// CHECK and CHECK_EQ record a failure and let the case go on; REQUIRE ends the
// case (for a precondition the rest depends on). The binary runs every case,
// or only the cases named on its command line; --list prints the names, one a
// line, which is how test/native-unit.test.ts runs each case as its own uvu test.
#pragma once
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>

namespace vhost_tap_test {

using CaseFunction = void (*)();

struct Registration {
  Registration(const char* name, CaseFunction run, const char* file, int line);
};

// Records a failed check of the case running now.
void recordFailure(const char* file, int line, const std::string& what);
// Ends the case running now (it has already failed).
[[noreturn]] void endCase();

// How a checked value prints in a failure. Enums print as numbers unless the
// tests specialise show() for them (test_support.h does for QueueFault, PopResult).
template <typename T>
std::string show(const T& value) {
  std::ostringstream out;
  if constexpr (std::is_enum_v<T>) {
    out << static_cast<int64_t>(value);
  } else if constexpr (std::is_same_v<T, bool>) {
    out << (value ? "true" : "false");
  } else if constexpr (std::is_integral_v<T> && sizeof(T) == 1) {
    out << static_cast<int>(value);
  } else if constexpr (std::is_integral_v<T>) {
    out << value << " (0x" << std::hex << static_cast<uint64_t>(value) << ")";
  } else {
    out << value;
  }
  return out.str();
}

template <typename A, typename B>
bool checkEqual(const A& a, const B& b, const char* aText, const char* bText, const char* file, int line) {
  if (a == b) return true;
  recordFailure(file, line, std::string(aText) + " == " + bText + ": " + show(a) + " != " + show(b));
  return false;
}

}  // namespace vhost_tap_test

#define VHOST_TAP_TEST_CONCAT2(a, b) a##b
#define VHOST_TAP_TEST_CONCAT(a, b) VHOST_TAP_TEST_CONCAT2(a, b)
#define VHOST_TAP_TEST_CASE(name, id)                                                                           \
  static void VHOST_TAP_TEST_CONCAT(testCase, id)();                                                         \
  static ::vhost_tap_test::Registration VHOST_TAP_TEST_CONCAT(testRegistration, id)(                          \
      name, VHOST_TAP_TEST_CONCAT(testCase, id), __FILE__, __LINE__);                                         \
  static void VHOST_TAP_TEST_CONCAT(testCase, id)()
#define TEST(name) VHOST_TAP_TEST_CASE(name, __COUNTER__)

#define CHECK(condition)                                                                   \
  do {                                                                                     \
    if (!(condition)) ::vhost_tap_test::recordFailure(__FILE__, __LINE__, "CHECK(" #condition ")"); \
  } while (0)
#define CHECK_EQ(a, b) ((void)::vhost_tap_test::checkEqual((a), (b), #a, #b, __FILE__, __LINE__))
#define REQUIRE(condition)                                                                   \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      ::vhost_tap_test::recordFailure(__FILE__, __LINE__, "REQUIRE(" #condition ")");        \
      ::vhost_tap_test::endCase();                                                           \
    }                                                                                        \
  } while (0)
#define REQUIRE_EQ(a, b)                                                                           \
  do {                                                                                             \
    if (!::vhost_tap_test::checkEqual((a), (b), #a, #b, __FILE__, __LINE__)) ::vhost_tap_test::endCase(); \
  } while (0)
