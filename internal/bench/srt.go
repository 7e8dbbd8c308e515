package bench

import (
	"context"
	"errors"
	"net/url"
)

// playSRT reads an SRT stream.
func (p *player) playSRT(ctx context.Context, u *url.URL) error {
	return errors.New("srt players: not built yet")
}
