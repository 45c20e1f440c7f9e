package lab

import "syscall"

// The lab's daemons (libvirtd, sshd, drover-target) run long after the
// command that started them. They must not keep a file descriptor that the
// process starting the lab inherited by accident: a lock held with
// flock(1) around `make lab`, say, would then be held until the lab is
// stopped, and a `flock … make lab-down` would wait for ever. So every
// descriptor above stderr that this process inherited is closed when it
// starts another program.
func init() {
	for fd := 3; fd < 1024; fd++ {
		syscall.CloseOnExec(fd)
	}
}
