package storage

import (
	"context"
	"net/http"
	"net/url"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// CreateSchedule stores a backup schedule on the target, which runs it by
// itself from then on. A bad request (a cron expression, keep, a missing
// volume, a restic password file the target cannot read) is refused with
// a message naming the field.
func (c *Client) CreateSchedule(ctx context.Context, req wire.ScheduleRequest) (wire.Schedule, error) {
	var s wire.Schedule
	err := c.do(ctx, http.MethodPost, "/v1/schedules", req, &s)
	return s, err
}

// ListSchedules returns every schedule, ordered by id.
func (c *Client) ListSchedules(ctx context.Context) ([]wire.Schedule, error) {
	var out wire.ScheduleList
	err := c.do(ctx, http.MethodGet, "/v1/schedules", nil, &out)
	return out.Schedules, err
}

// GetSchedule returns a schedule (ErrNotFound if it is gone).
func (c *Client) GetSchedule(ctx context.Context, id string) (wire.Schedule, error) {
	var s wire.Schedule
	err := c.do(ctx, http.MethodGet, "/v1/schedules/"+url.PathEscape(id), nil, &s)
	return s, err
}

// ReplaceSchedule replaces what a schedule does (its VM stays; its last
// run too) and returns it.
func (c *Client) ReplaceSchedule(ctx context.Context, id string, req wire.ScheduleRequest) (wire.Schedule, error) {
	var s wire.Schedule
	err := c.do(ctx, http.MethodPut, "/v1/schedules/"+url.PathEscape(id), req, &s)
	return s, err
}

// DeleteSchedule stops and forgets a schedule; the backups it made stay.
func (c *Client) DeleteSchedule(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/schedules/"+url.PathEscape(id), nil, nil)
}

// CheckRestic asks the target whether it can use a restic repository with
// a password file: an error names what is wrong (an unreadable password
// file, a wrong password); Initialized is false for a repository the first
// schedule using it will create.
func (c *Client) CheckRestic(ctx context.Context, r wire.Restic) (wire.ResticCheck, error) {
	var out wire.ResticCheck
	err := c.do(ctx, http.MethodPost, "/v1/restic-checks", r, &out)
	return out, err
}
