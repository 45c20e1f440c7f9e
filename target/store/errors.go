package store

import (
	"errors"
	"fmt"
)

// Kinds of failure a caller may want to tell apart. Errors returned by the
// store wrap one of them (test with errors.Is) and carry a message that names
// the offending field or object and, where there is one, the fix.
var (
	ErrInvalid     = errors.New("invalid request")
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrNoSpace     = errors.New("not enough space")
	ErrShrink      = errors.New("volumes cannot shrink")
	ErrTooLarge    = errors.New("image larger than volume")
	ErrUnsupported = errors.New("unsupported")
	// ErrConflict: the object is bound to another (a snapshot to its set)
	// and cannot change on its own.
	ErrConflict = errors.New("conflict")
)

// kindError is an error whose message is written for a human while its kind
// is one of the sentinels above.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
