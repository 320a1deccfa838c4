package grpcapi

import (
	"context"
	"errors"
	"math"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// RetryAfterHeader is the response header metadata that carries a throttled call's retry delay
// in whole seconds; the gateway turns it into HTTP Retry-After.
const RetryAfterHeader = "retry-after"

// withRetryAfter sets the retry-after header when err is a throttling error with a delay, and
// returns err unchanged.
func withRetryAfter(ctx context.Context, err error) error {
	var de *apperr.Error
	if errors.As(err, &de) && de.Code == apperr.ResourceExhausted && de.RetryAfter > 0 {
		secs := int64(math.Ceil(de.RetryAfter.Seconds()))
		_ = grpc.SetHeader(ctx, metadata.Pairs(RetryAfterHeader, strconv.FormatInt(secs, 10)))
	}
	return err
}
