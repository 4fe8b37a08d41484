#pragma once
// Fault injection for core::AtomicFile (h5.h), for tests of disk-full and crash handling (compiled
// in always, inert unless the environment variable is set): STRATA_FAULT="ACTION:PATTERN:N" acts at the N-th commit (1-based,
// counted in this process) of an AtomicFile whose target path contains PATTERN:
//   enospc  the temporary is cut to half its size and commit() throws as a full disk makes it fail
//           ("No space left on device"); the old <path> is untouched
//   kill    the process SIGKILLs itself after writing the temporary, before the rename (a crash in
//           the middle of the write)
// Several faults can be given, separated by ';'.
#include <string>

namespace strata::core {

/// The fault STRATA_FAULT asks for at this commit of `path` ("enospc", "kill"), "" = none. Counts
/// the commit.
std::string injected_fault(const std::string& path);

}  // namespace strata::core
