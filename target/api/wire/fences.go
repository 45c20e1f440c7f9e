package wire

import "time"

// Fence is a fenced initiator as the API shows it: refused at login on
// every volume since CreatedAt (UTC, whole seconds), for Reason.
type Fence struct {
	Initiator string    `json:"initiator"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// FenceRequest is the body of PUT /v1/fences/{initiator}: why the
// initiator is fenced, 1-256 bytes of text.
type FenceRequest struct {
	Reason string `json:"reason"`
}

// FenceList is the answer of GET /v1/fences, ordered by initiator.
type FenceList struct {
	Fences []Fence `json:"fences"`
}
