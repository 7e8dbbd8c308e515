package bench

import (
	"context"
	"errors"
	"net/url"
)

// playWHEP plays a WHEP endpoint.
func (p *player) playWHEP(ctx context.Context, u *url.URL) error {
	return errors.New("whep players: not built yet")
}
