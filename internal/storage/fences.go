package storage

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// Fences lists the fenced initiators, ordered by name.
func (c *Client) Fences(ctx context.Context) ([]wire.Fence, error) {
	var out wire.FenceList
	err := c.do(ctx, http.MethodGet, "/v1/fences", nil, &out)
	return out.Fences, err
}

// Fence shuts an initiator out of every volume (PUT
// /v1/fences/{initiator}): its logins are refused whatever the allow-lists
// say, its sessions are closed and its persistent-reservation
// registrations removed. It returns once no session of the initiator is
// left and none of its writes can land any more; with ctx's deadline
// passed first, the fence is in force but its sessions may not have ended:
// call Fence again to wait for them. Fencing a fenced initiator again
// changes only the reason.
func (c *Client) Fence(ctx context.Context, initiator, reason string) (wire.Fence, error) {
	var f wire.Fence
	err := c.do(ctx, http.MethodPut, "/v1/fences/"+url.PathEscape(initiator), wire.FenceRequest{Reason: reason}, &f)
	return f, err
}

// Unfence lifts the fence of an initiator (DELETE
// /v1/fences/{initiator}), which may then log in again as far as the
// allow-lists let it. An initiator that is not fenced is not an error:
// after Unfence returns nil, the initiator is not fenced.
func (c *Client) Unfence(ctx context.Context, initiator string) error {
	err := c.do(ctx, http.MethodDelete, "/v1/fences/"+url.PathEscape(initiator), nil, nil)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
