"""The huge-page malloc restart: when it applies, and that a restarted process has the tunable."""

import subprocess
import sys

import pytest

from piti_jax import huge_pages

GLIBC = (2, 36)


@pytest.mark.parametrize("environ, glibc, thp_on, expected", [
    ({}, GLIBC, True, "glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, GLIBC, True, "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, True, None),  # the user's own choice stays
    ({}, (2, 34), True, None),  # glibc without the tunable
    ({}, None, True, None),  # not glibc (musl, macOS)
    ({}, GLIBC, False, None),  # transparent huge pages off
])
def test_tunables_are_added_only_where_they_work_and_never_over_a_users_value(environ, glibc, thp_on, expected):
  assert huge_pages.tunables_with_huge_pages(environ, glibc, thp_on) == expected


def test_active_reads_the_tunable_among_others():
  assert huge_pages.active({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"})
  assert not huge_pages.active({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
  assert not huge_pages.active({})


def test_transparent_huge_pages_setting_is_read_from_the_bracketed_choice(tmp_path):
  setting = tmp_path / "enabled"
  for text, on in (("always [madvise] never\n", True), ("[always] madvise never\n", True),
                   ("always madvise [never]\n", False)):
    setting.write_text(text)
    assert huge_pages.transparent_huge_pages_on(str(setting)) is on
  assert not huge_pages.transparent_huge_pages_on(str(tmp_path / "missing"))


def test_the_restarted_process_runs_the_same_command_with_the_tunable():
  # The child takes glibc 2.36 with huge pages on as given, so the restart runs on any Linux host;
  # a C library without the tunable only ignores the variable.
  code = ("import os, sys; from piti_jax import huge_pages; "
          "huge_pages.glibc_version = lambda: (2, 36); huge_pages.transparent_huge_pages_on = lambda: True; "
          "print('start', os.getpid(), flush=True); "
          "huge_pages.reexec_with_huge_pages(); print(os.getpid(), sys.argv[1:], huge_pages.active())")
  result = subprocess.run([sys.executable, "-c", code, "an", "argument"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=8"}, check=True)
  starts = [line for line in result.stdout.splitlines() if line.startswith("start")]
  first_pid = starts[0].split()[1]
  assert len(starts) == 2 and starts[1].split()[1] == first_pid  # restarted once, same process
  assert result.stdout.splitlines()[-1] == f"{first_pid} ['an', 'argument'] True"
