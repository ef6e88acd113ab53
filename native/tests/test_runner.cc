#include "test_runner.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <vector>

namespace vhost_tap_test {
namespace {

struct Case {
  std::string name;
  CaseFunction run;
  const char* file;
  int line;
};

// A function-local static: registrations run during static initialisation, in
// whatever order the test files' objects are linked.
std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}

struct CaseEnded {};

int failuresInCase = 0;

// Runs one case; true if every check passed.
bool runCase(const Case& c) {
  failuresInCase = 0;
  try {
    c.run();
  } catch (const CaseEnded&) {
  } catch (const std::exception& e) {
    recordFailure(c.file, c.line, std::string("uncaught exception: ") + e.what());
  } catch (...) {
    recordFailure(c.file, c.line, "uncaught exception of an unknown type");
  }
  std::printf("%s %s\n", failuresInCase == 0 ? "ok  " : "FAIL", c.name.c_str());
  std::fflush(stdout);
  return failuresInCase == 0;
}

}  // namespace

Registration::Registration(const char* name, CaseFunction run, const char* file, int line) {
  cases().push_back({name, run, file, line});
}

void recordFailure(const char* file, int line, const std::string& what) {
  failuresInCase++;
  std::fprintf(stderr, "  %s:%d: %s\n", file, line, what.c_str());
}

void endCase() { throw CaseEnded(); }

}  // namespace vhost_tap_test

int main(int argc, char** argv) {
  using vhost_tap_test::cases;
  // --list hands names to another program: two cases of one name could not be told apart.
  std::map<std::string, const char*> seen;
  for (const auto& c : cases()) {
    if (!seen.emplace(c.name, c.file).second) {
      std::fprintf(stderr, "two cases are named \"%s\" (%s and %s)\n", c.name.c_str(), seen[c.name], c.file);
      return 2;
    }
  }
  std::vector<const vhost_tap_test::Case*> chosen;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--list") == 0) {
      for (const auto& c : cases()) std::printf("%s\n", c.name.c_str());
      return 0;
    }
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf("usage: %s [--list] [case name...]\n  runs every case, or the cases named (exactly as --list prints them)\n",
                  argv[0]);
      return 0;
    }
    const vhost_tap_test::Case* found = nullptr;
    for (const auto& c : cases()) {
      if (c.name == argv[i]) found = &c;
    }
    if (!found) {
      std::fprintf(stderr, "no case is named \"%s\" (--list prints their names)\n", argv[i]);
      return 2;
    }
    chosen.push_back(found);
  }
  if (chosen.empty()) {
    for (const auto& c : cases()) chosen.push_back(&c);
  }
  int failed = 0;
  for (const auto* c : chosen) failed += vhost_tap_test::runCase(*c) ? 0 : 1;
  std::printf("%zu passed, %d failed\n", chosen.size() - static_cast<size_t>(failed), failed);
  return failed == 0 ? 0 : 1;
}
