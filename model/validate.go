package model

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// ErrInvalid is wrapped by every validation error, so callers can map it with errors.Is
// (the gateway answers InvalidArgument / HTTP 400).
var ErrInvalid = errors.New("invalid")

// FieldError says which field of a request is wrong and why, in words a person can act on.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Invalid returns a *FieldError for field.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidateID checks an identifier (tenant or camera): 1 to 63 characters, lower-case
// letters, digits, '-' and '_', starting with a letter or digit.
func ValidateID(field, id string) error {
	if id == "" {
		return Invalid(field, "is required")
	}
	if !idPattern.MatchString(id) {
		return Invalid(field, "%q must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit", id)
	}
	return nil
}

// Normalize fills the defaults of a tenant that its creator left empty.
func (t *Tenant) Normalize() {
	if t.RetentionDays == 0 {
		t.RetentionDays = MaxRetentionDays
	}
}

// Validate reports the first problem of a tenant, naming the field.
func (t *Tenant) Validate() error {
	if err := ValidateID("id", string(t.ID)); err != nil {
		return err
	}
	if strings.TrimSpace(t.Name) == "" {
		return Invalid("name", "is required")
	}
	if t.RetentionDays < 1 || t.RetentionDays > MaxRetentionDays {
		return Invalid("retention_days", "must be between 1 and %d (legal maximum), got %d", MaxRetentionDays, t.RetentionDays)
	}
	if t.CameraQuota < 0 {
		return Invalid("camera_quota", "must not be negative, got %d", t.CameraQuota)
	}
	return nil
}

// Normalize fills the defaults of a camera that its creator left empty. tenantRetention is
// the retention of the camera's tenant (0 when unknown).
func (c *Camera) Normalize(tenantRetention int) {
	if c.Transport == "" {
		c.Transport = TransportTCP
	}
	if c.Ingest == "" {
		if c.URL == "" {
			c.Ingest = IngestPush
		} else {
			c.Ingest = IngestPull
		}
	}
	if c.Recording == "" {
		c.Recording = RecordContinuous
	}
	if c.Redundancy == "" {
		c.Redundancy = RedundancyStandard
	}
	if c.RetentionDays == 0 {
		c.RetentionDays = tenantRetention
		if c.RetentionDays == 0 {
			c.RetentionDays = MaxRetentionDays
		}
	}
	if c.Name == "" {
		c.Name = string(c.ID)
	}
}

// Validate reports the first problem of a camera, naming the field.
func (c *Camera) Validate() error {
	if err := ValidateID("id", string(c.ID)); err != nil {
		return err
	}
	if err := ValidateID("tenant", string(c.Tenant)); err != nil {
		return err
	}
	switch c.Ingest {
	case IngestPull:
		if c.URL == "" {
			return Invalid("url", "is required for a pulled camera (ingest=pull)")
		}
	case IngestPush:
		if c.URL != "" {
			return Invalid("url", "must be empty for a pushed camera (ingest=push): the camera publishes to the node")
		}
	default:
		return Invalid("ingest", "must be %q or %q, got %q", IngestPull, IngestPush, c.Ingest)
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil {
			return Invalid("url", "is not a URL: %v", err)
		}
		if u.Scheme != "rtsp" && u.Scheme != "rtsps" {
			return Invalid("url", "must start with rtsp:// or rtsps://, got %q", c.URL)
		}
		if u.Host == "" {
			return Invalid("url", "has no host: %q", c.URL)
		}
		if u.User != nil {
			return Invalid("url", "must not hold credentials: set username and password instead")
		}
	}
	if c.Transport != TransportTCP && c.Transport != TransportUDP {
		return Invalid("transport", "must be %q or %q, got %q", TransportTCP, TransportUDP, c.Transport)
	}
	if c.Recording != RecordContinuous && c.Recording != RecordOff {
		return Invalid("recording", "must be %q or %q, got %q", RecordContinuous, RecordOff, c.Recording)
	}
	if c.Redundancy != RedundancyStandard && c.Redundancy != RedundancyCritical {
		return Invalid("redundancy", "must be %q or %q, got %q", RedundancyStandard, RedundancyCritical, c.Redundancy)
	}
	if c.RetentionDays < 1 || c.RetentionDays > MaxRetentionDays {
		return Invalid("retention_days", "must be between 1 and %d (legal maximum), got %d", MaxRetentionDays, c.RetentionDays)
	}
	if c.Password != "" && c.Username == "" {
		return Invalid("username", "is required when a password is set")
	}
	return nil
}
