package email

import (
	"errors"
	"regexp"
	"strconv"

	"github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/channels"
)

var (
	replyCode    = regexp.MustCompile(`(?:^|[:\s])([2-5]\d\d)(?:[\s-]|$)`)
	enhancedCode = regexp.MustCompile(`\b([245]\.\d{1,3}\.\d{1,3})\b`)
)

// configCodes are replies that point at our configuration (authentication, TLS), not at the
// message: retrying is right once an operator fixes the setting, so they are temporary and
// flagged as configuration alerts.
var configCodes = map[int]bool{530: true, 534: true, 535: true, 538: true}

// Classify maps an SMTP failure to a channels.Error. It does not trust go-mail's IsTemp alone:
// network errors report false there.
func Classify(err error) *channels.Error {
	if err == nil {
		return nil
	}
	code, enh := 0, ""
	var se *mail.SendError
	if errors.As(err, &se) {
		code, enh = se.ErrorCode(), se.EnhancedStatusCode()
		switch se.Reason {
		case mail.ErrGetSender, mail.ErrGetRcpts, mail.ErrNoUnencoded:
			return &channels.Error{Class: channels.Permanent, Err: err}
		}
	}
	if code == 0 {
		if m := replyCode.FindStringSubmatch(err.Error()); m != nil {
			code, _ = strconv.Atoi(m[1])
		}
	}
	if enh == "" {
		if m := enhancedCode.FindStringSubmatch(err.Error()); m != nil {
			enh = m[1]
		}
	}
	return ClassifyCode(code, enh, err)
}

// ClassifyCode classifies an SMTP reply code (0: no reply — a network error or dropped
// connection) and enhanced status code.
func ClassifyCode(code int, enhanced string, err error) *channels.Error {
	e := &channels.Error{Code: code, Enhanced: enhanced, Err: err}
	switch {
	case configCodes[code] || enhanced == "5.7.8" || enhanced == "5.7.0" && code == 530:
		e.Class, e.ConfigAlert = channels.Temporary, true
	case code == 0, code >= 400 && code < 500:
		e.Class = channels.Temporary
	case code >= 500:
		e.Class = channels.Permanent
	default:
		e.Class = channels.Temporary
	}
	return e
}
