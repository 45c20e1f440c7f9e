package placement

import (
	"fmt"
	"strings"
)

// Rejection is why one host cannot take a VM: the check that refused it and
// its reason, e.g. {"beta", "memory", "512 MiB free, needs 2048"}.
type Rejection struct {
	Host   string
	Check  string
	Reason string
}

func (r Rejection) String() string { return r.Host + ": " + r.Reason }

// Unplaceable is the error for a VM that no host can take. It carries every
// host's rejection, sorted by host name, so that callers can format their own
// diagnostics.
type Unplaceable struct {
	VM         string
	Rejections []Rejection
}

func (e *Unplaceable) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "place vm %q: ", e.VM)
	if len(e.Rejections) == 0 {
		b.WriteString("no hosts")
	}
	for i, r := range e.Rejections {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Unspreadable is the error for a spread group with more VMs than there are
// hosts in service to spread them over: while every host is in service, or
// with Options.StrictSpread, or with no host in service at all.
type Unspreadable struct {
	Group        string
	VMs          []string // the group's members, sorted
	Hosts        []string // the eligible hosts (in service), sorted
	OutOfService []string // the hosts in maintenance or failed, sorted
	Strict       bool     // refused for Options.StrictSpread (the group could share hosts)
}

func (e *Unspreadable) Error() string {
	msg := fmt.Sprintf("spread group %q: %s on %s", e.Group, count(len(e.VMs), "VM"), count(len(e.Hosts), "eligible host"))
	if e.Strict {
		msg += " (strict spread)"
	}
	return msg
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
