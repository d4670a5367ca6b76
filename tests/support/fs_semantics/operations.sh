#!/bin/sh
# File-system semantics suite: what package managers and setup scripts do to the files an image
# ships. Runs as root inside a sandbox; the test runs it once on the overlay root and once on a
# plain copy of the same image, then compares the listings (listing.py) of the two trees.
set -eu
step() { echo "step: $*"; }

step delete files and directory trees of the image
rm /etc/debian_version
rm -rf /usr/share/doc /usr/share/common-licenses /var/lib/dpkg/info/base-files.md5sums

step replace a file, a file by a directory, a directory by a file
echo replaced > /etc/motd
rm /etc/host.conf && mkdir /etc/host.conf && echo inside > /etc/host.conf/file
rm -rf /etc/default && echo "now a file" > /etc/default

step rename files and directories of the image, re-create a directory of the same name
mv /etc/issue /etc/issue.renamed
mv /etc/apt/apt.conf.d /etc/apt/apt.conf.d.moved
mkdir /etc/apt/apt.conf.d && echo 'APT::Sandbox "yes";' > /etc/apt/apt.conf.d/99iii
mv /usr/share/info /var/info-moved

step hardlinks and symlinks to image files
ln /etc/login.defs /etc/login.defs.hardlink
ln -s /etc/passwd /root/passwd-link
ln -sfn ../usr/lib/os-release /etc/os-release.copy-link
ln -sfn /etc/shells /etc/os-release

step chmod, chown, xattrs
chmod 0600 /etc/shells
chmod 0700 /var/log
chmod 4755 /usr/bin/env
chown 1000:1000 /etc/shells 2>/dev/null || echo "chown 1000: refused"
chown -h 33:33 /root/passwd-link 2>/dev/null || echo "chown -h 33: refused"
python3 -c "import os; os.setxattr('/etc/hostname', 'user.iii', b'set')" \
    || echo "setxattr: refused"

step sockets and fifos in /tmp and /run
mkfifo /run/iii.fifo /tmp/iii.fifo
python3 -c "
import socket
for path in ('/run/iii.sock', '/tmp/iii.sock'):
    socket.socket(socket.AF_UNIX).bind(path)
"

step dpkg -i, -r and -i again of a package that ships into the image directories
dpkg -i /mnt/iii-fs-test.deb >/dev/null
test "$(/usr/bin/iii-fs-test)" = "iii-fs-test 1.0"
dpkg -r iii-fs-test >/dev/null
test ! -e /usr/bin/iii-fs-test
dpkg -i /mnt/iii-fs-test.deb >/dev/null

step listing
python3 /mnt/listing.py /
echo "operations: done"
