// Package lab starts and stops Drover's local lab: two libvirt daemons acting as
// the hosts alpha and beta on loopback addresses (over tcp and ssh), a drover-target
// storage box (and a second one whose API is https with a CA of the lab's own), and
// a tiny guest (a Debian kernel and a busybox initramfs) that they can boot. The
// lab keeps all of its state in .lab/ at the repository root; make targets and
// acceptance tests use it.
package lab
