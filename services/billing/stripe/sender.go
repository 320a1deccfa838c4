package stripe

import (
	"context"
	"fmt"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

var _ billing.MeterEventSender = (*Client)(nil)

// SendMeterEvent sends the reporter's meter event (billing.MeterEventSender). Permanent
// failures wrap billing.ErrPermanent; a duplicate identifier is a success.
func (c *Client) SendMeterEvent(ctx context.Context, e billing.MeterEvent) error {
	_, err := c.ReportMeterEvent(ctx, MeterEvent(e))
	if Permanent(err) {
		return fmt.Errorf("%w: %w", billing.ErrPermanent, err)
	}
	return err
}
