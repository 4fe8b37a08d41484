#pragma once
// Fault injection, for tests of disk-full, crash and lost-worker handling (compiled in always, inert
// unless the environment variable is set). STRATA_FAULT holds one or more specs separated by ';':
//
//   ACTION:PATTERN:N        at the N-th commit (1-based, counted in this process) of a core::AtomicFile
//                           (h5.h) whose target path contains PATTERN (no ':'):
//     enospc                the temporary is cut to half its size and commit() throws as a full disk
//                           makes it fail ("No space left on device"); the old <path> is untouched
//     kill                  the process SIGKILLs itself after writing the temporary, before the rename
//                           (a crash in the middle of the write)
//   ACTION:task=T[:rank=R]  as task T (1-based, as the log counts) starts, in every process or only in
//                           the worker of rank R (several workers; one process is rank 0):
//     kill                  the process SIGKILLs itself (a worker that dies)
//     stop                  the process SIGSTOPs itself (a worker that hangs)
//
// e.g. STRATA_FAULT="enospc:versions/v001:1" or "kill:task=2:rank=1". A spec that is none of these is
// an error naming it (at the first fault point that reads the variable).
#include <cstdint>
#include <string>

namespace strata::core {

/// The fault STRATA_FAULT asks for at this commit of `path` ("enospc", "kill"), "" = none. Counts
/// the commit.
std::string injected_fault(const std::string& path);

/// Carries out the task fault STRATA_FAULT asks for as task `task_index` (0-based) starts on the
/// process of rank `rank`: SIGKILL or SIGSTOP to itself. Does nothing when none matches.
void fault_at_task_start(int64_t task_index, int64_t rank);

}  // namespace strata::core
