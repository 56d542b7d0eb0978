#!/bin/sh
# Users and groups in the guest: who owns what a guest user creates on the host, and what a
# supplementary group grants (FUSE_CREATE_SUPP_GROUP, sent by 6.3+ guests). Runs in the guest
# under busybox sh as root with the virtio-fs mount as $1 (default /mnt); guest users run through
# `svfs-guest-tool runas UID GID,GROUPS...`. Prints PASS/FAIL/SKIP lines, "HOSTCHECK owner
# UID:GID REL" lines for the host, and a summary.
# Knobs (run-guest.sh --env): ID_ROOT, the host ID the guest's root acts as (default 0), and
# ID_BASE, the host ID of guest ID 1 (default 1: identity), as svfsd's --uid-map/--gid-map say.
root=${1:-/mnt}
ID_ROOT=${ID_ROOT:-0}
ID_BASE=${ID_BASE:-1}
. /checks.sh
# refused NAME COMMAND...: PASS if the command fails with "Permission denied" or "not permitted".
refused() {
  name=$1
  shift
  if out=$("$@" 2>&1); then fail "$name" "succeeded"
  elif echo "$out" | grep -qE 'Permission denied|not permitted'; then pass "$name"
  else fail "$name" "$(echo "$out" | tr '\n' ' ')"; fi
}
host_id() { if [ "$1" = 0 ]; then echo "$ID_ROOT"; else echo $((ID_BASE + $1 - 1)); fi; }
owner() { echo "HOSTCHECK owner $(host_id "$1"):$(host_id "$2") $3"; }

tool=svfs-guest-tool
if ! command -v $tool >/dev/null 2>&1; then
  echo "FAIL setup: the guest image has no $tool (scripts/guest-image.sh builds it with gcc)"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi
# The member: uid 1000, primary group 1000, supplementary group 1100. The outsider: 1001:1001.
member() { $tool runas 1000 1000,1100 "$@"; }
outsider() { $tool runas 1001 1001 "$@"; }
# 6.3+ guests send the parent's group with a creation when the caller is in it (CREATE_SUPP_GROUP).
kernel_sends_group=0
case "$(uname -r)" in
  [0-5].*|6.[0-2].*) ;;
  *) kernel_sends_group=1 ;;
esac

w=ids.$$
cd "$root" && rm -rf "$w" && mkdir "$w" && chmod 0755 "$w" && cd "$w" ||
  { echo "FAIL setup: mkdir $root/$w"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }

# Root's files are owned by the ID the guest's root acts as on the host.
check root-creates sh -c 'echo root >rootfile && [ "$(cat rootfile)" = root ]'
owner 0 0 "$w/rootfile"

# A chown by root to guest IDs stores their host IDs.
check root-chowns sh -c 'mkdir home && chown 1000:1000 home && [ "$(stat -c %u:%g home)" = 1000:1000 ]'
owner 1000 1000 "$w/home"

# A user's own files, in its own directory: content, rename, links, removal.
t_user_files() {
  member sh -c 'cd home && echo data >own && mv own kept && ln kept hard && ln -s kept soft &&
    [ "$(cat soft)" = data ] && [ "$(stat -c %h kept)" = 2 ] && rm hard && mkdir sub && rmdir sub'
}
check user-files t_user_files
owner 1000 1000 "$w/home/kept"
check user-sees-own-ids sh -c '[ "$(stat -c %u:%g home/kept)" = 1000:1000 ]'
refused outsider-cannot-write-there outsider sh -c 'echo x >home/intruder'

# chgrp to a group the caller is in works; to another group it is refused.
check chgrp-to-supplementary-group member sh -c ': >home/regrouped && chgrp 1100 home/regrouped'
owner 1000 1100 "$w/home/regrouped"
refused chgrp-to-foreign-group member chgrp 1200 home/regrouped

# A directory only group 1100 may write: its member creates there only when the guest kernel
# sends the group (6.3+); older guests get EACCES from the host (docs/architecture.md).
mkdir team && chown 0:1100 team && chmod 0775 team
owner 0 1100 "$w/team"
if [ "$kernel_sends_group" = 1 ]; then
  check member-creates-in-group-dir member sh -c 'echo m >team/member && mkdir team/memberdir'
  owner 1000 1000 "$w/team/member"
  owner 1000 1000 "$w/team/memberdir"
else
  refused member-creates-in-group-dir-refused-on-old-guests member sh -c 'echo m >team/member'
fi
refused outsider-cannot-create-in-group-dir outsider sh -c 'echo o >team/outsider'

# The documented limit for guests of any kernel: a directory only the group may search. A lookup
# carries no groups, so the host refuses the member a name the guest has not cached (dropped here)
# where the guest kernel allowed it.
mkdir closed && chown 0:1100 closed && chmod 0770 closed && : >closed/inside
sync
echo 2 >/proc/sys/vm/drop_caches
refused member-cannot-enter-group-only-dir member cat closed/inside

# A setgid directory: new entries take the directory's group, subdirectories keep the bit.
mkdir shared && chown 0:1100 shared && chmod 2775 shared
if [ "$kernel_sends_group" = 1 ]; then
  check setgid-dir-group-inherited member sh -c 'echo s >shared/file && mkdir shared/dir &&
    [ "$(stat -c %g shared/file)" = 1100 ] && [ -g shared/dir ]'
  owner 1000 1100 "$w/shared/file"
  owner 1000 1100 "$w/shared/dir"
else
  skip setgid-dir-group-inherited "a $(uname -r) guest sends no group: the member may not create there"
fi

summary
