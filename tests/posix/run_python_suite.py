"""Runs CPython's own file-system tests (Debian's libpython3.11-testsuite) in the current
directory and writes one line per test: its outcome (ok, skip, fail, error, xfail, xpass) and id.

    cd DIR && /usr/bin/python3 run_python_suite.py [--chdir DIR] [--as-user UID GID] OUT MODULE...

The tests make their files under the current directory (test.support's TESTFN is relative) and
under TMPDIR, so both should point at the file system under test. tests/posix/run.sh runs this
on a host directory (the reference) and on svfsd's mounts, and compares the outcomes.
"""
import os
import sys
import unittest


class OutcomeResult(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    def _record(self, test, outcome):
        # A failing subTest must not be hidden by the test's own success afterwards.
        key = test.id() if not isinstance(test, unittest.case._SubTest) else test.test_case.id()
        if self.outcomes.get(key) in ("fail", "error"):
            return
        self.outcomes[key] = outcome

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "ok")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skip")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail")

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._record(subtest, "fail" if issubclass(err[0], test.failureException) else "error")


def main():
    args = sys.argv[1:]
    # --chdir DIR: run there (in a chroot, where the caller cannot cd first);
    # --as-user UID GID: drop to that user, no supplementary groups (no setpriv in the guest).
    while args and args[0].startswith("--"):
        if args[0] == "--chdir":
            os.chdir(args[1])
            args = args[2:]
        elif args[0] == "--as-user":
            uid, gid = int(args[1]), int(args[2])
            os.chown(".", uid, gid)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            args = args[3:]
        else:
            sys.exit(f"run_python_suite.py: unknown option {args[0]}")
    out, modules = args[0], args[1:]
    loader = unittest.defaultTestLoader
    suite = unittest.TestSuite()
    for name in modules:
        suite.addTests(loader.loadTestsFromName("test." + name))
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=1, resultclass=OutcomeResult)
    result = runner.run(suite)
    with open(out, "w") as f:
        for test_id, outcome in sorted(result.outcomes.items()):
            f.write(f"{outcome} {test_id}\n")


if __name__ == "__main__":
    main()
