package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed 5-field cron expression: minute, hour, day of month,
// month, day of week, as crontab(5) has them. Each field is *, a number, a
// range a-b, a step */n or a-b/n, a list of those separated by commas, or
// (months and days of week) a three-letter English name; day of week 0 and 7
// are both Sunday. When both day fields are restricted, a day matches
// either of them (crontab(5)'s rule).
type Cron struct {
	expr                          string
	minute, hour, dom, month, dow uint64 // bit i set: value i matches
	domRestricted, dowRestricted  bool
}

// field is one of the five fields: its name in errors and its range.
type field struct {
	name     string
	min, max int
	names    []string // names[i] stands for min+i
}

var fields = [5]field{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day of month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
	{name: "day of week", min: 0, max: 7, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
}

// ParseCron parses a 5-field cron expression. Its errors name the field and
// what is wrong with it.
func ParseCron(expr string) (Cron, error) {
	parts := strings.Fields(expr)
	if len(parts) != 5 {
		return Cron{}, fmt.Errorf("cron expression %q has %d fields, want 5: minute hour day-of-month month day-of-week (e.g. \"30 2 * * *\" is 02:30 every day)", expr, len(parts))
	}
	c := Cron{expr: strings.Join(parts, " ")}
	sets := [5]*uint64{&c.minute, &c.hour, &c.dom, &c.month, &c.dow}
	for i, p := range parts {
		set, err := fields[i].parse(p)
		if err != nil {
			return Cron{}, fmt.Errorf("cron expression %q: %s field %q: %w", expr, fields[i].name, p, err)
		}
		*sets[i] = set
	}
	if c.dow&(1<<7) != 0 { // 7 is Sunday too
		c.dow |= 1
	}
	c.domRestricted = parts[2] != "*"
	c.dowRestricted = parts[4] != "*"
	return c, nil
}

// String is the expression, with its fields separated by single spaces.
func (c Cron) String() string { return c.expr }

func (f field) parse(s string) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(s, ",") {
		lo, hi, step := f.min, f.max, 1
		rng, stepText, hasStep := strings.Cut(item, "/")
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q is not a whole number of 1 or more", stepText)
			}
			step = n
		}
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = f.value(a); err != nil {
				return 0, err
			}
			if hi, err = f.value(b); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("range %s runs backwards", rng)
			}
		default:
			v, err := f.value(rng)
			if err != nil {
				return 0, err
			}
			lo, hi = v, v
			if hasStep { // "5/15": from 5 to the end, every 15
				hi = f.max
			}
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << v
		}
	}
	return set, nil
}

func (f field) value(s string) (int, error) {
	for i, n := range f.names {
		if strings.EqualFold(s, n) {
			return f.min + i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		if f.names != nil {
			return 0, fmt.Errorf("%q is neither a number nor a name like %s", s, f.names[0])
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%d is out of %d-%d", v, f.min, f.max)
	}
	return v, nil
}

// horizon bounds the search for the next run: a schedule that matches no
// time within it (February 30th) never runs.
const horizon = 5 * 366 * 24 * time.Hour

// Next returns the first time after t (to the minute, in t's location) that
// the expression matches, and false when none comes within five years.
// Local times that a daylight-saving change skips do not match; a local
// time that it repeats matches once, at its first instance.
func (c Cron) Next(t time.Time) (time.Time, bool) {
	loc := t.Location()
	after := wall(t)
	t = t.Truncate(time.Minute).Add(time.Minute)
	end := t.Add(horizon)
	for t.Before(end) {
		y, mo, d := t.Date()
		switch {
		case c.month&(1<<uint(mo)) == 0:
			t = time.Date(y, mo+1, 1, 0, 0, 0, 0, loc)
		case !c.dayMatches(t):
			t = time.Date(y, mo, d+1, 0, 0, 0, 0, loc)
		case c.hour&(1<<uint(t.Hour())) == 0:
			// To the next hour in elapsed time, not by the wall clock:
			// an hour that a daylight-saving change repeats is met at its
			// first instance.
			t = t.Add(time.Duration(60-t.Minute()) * time.Minute)
		case c.minute&(1<<uint(t.Minute())) == 0 || wall(t) <= after:
			// The second rule skips the hour a daylight-saving change
			// repeats: its wall clock has been seen already.
			t = t.Add(time.Minute)
		default:
			return t, true
		}
	}
	return time.Time{}, false
}

// wall is t's wall clock to the minute as one ordered number.
func wall(t time.Time) int64 {
	y, mo, d := t.Date()
	return ((int64(y)*13+int64(mo))*32+int64(d))*1440 + int64(t.Hour())*60 + int64(t.Minute())
}

func (c Cron) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dow&(1<<uint(t.Weekday())) != 0
	if c.domRestricted && c.dowRestricted {
		return dom || dow
	}
	return dom && dow
}
