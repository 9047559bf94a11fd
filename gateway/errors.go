package gateway

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigie-vms/vigie/model"
)

// codeOf maps an error to a gRPC code with errors.Is over the model sentinels.
func codeOf(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrUnauthenticated):
		return codes.Unauthenticated
	case errors.Is(err, ErrPermissionDenied):
		return codes.PermissionDenied
	case errors.Is(err, model.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, model.ErrExists):
		return codes.AlreadyExists
	case errors.Is(err, model.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, model.ErrInUse), errors.Is(err, model.ErrStaleEpoch):
		return codes.FailedPrecondition
	case errors.Is(err, model.ErrQuota), errors.Is(err, model.ErrNoSpace):
		return codes.ResourceExhausted
	case errors.Is(err, model.ErrNotLeader):
		return codes.Unavailable
	case errors.Is(err, model.ErrCorrupt):
		return codes.DataLoss
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	default:
		return codes.Internal
	}
}

// toStatus turns an error into a gRPC status error. A status error passes through. An
// invalid argument carries the FieldError message ("field: reason") and a google.rpc
// BadRequest field violation.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codeOf(err)
	msg := err.Error()
	var fe *model.FieldError
	if code == codes.InvalidArgument && errors.As(err, &fe) {
		msg = fe.Error()
	}
	st := status.New(code, msg)
	if fe != nil {
		if d, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: fe.Field, Description: fe.Reason},
		}}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// httpStatusOf maps an error to the HTTP status grpc-gateway would give its gRPC code, for
// the media endpoints. ResourceExhausted from a full disk is 507.
func httpStatusOf(err error) int {
	if errors.Is(err, model.ErrNoSpace) {
		return http.StatusInsufficientStorage
	}
	return runtimeHTTPStatus(codeOf(err))
}
