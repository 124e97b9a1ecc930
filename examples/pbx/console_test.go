package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-imap/v2/imapclient"
)

// dialIMAP logs in to the PBX p (data in dir) over STARTTLS.
func dialIMAP(t testing.TB, p *pbxProc, dir, box, password string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialStartTLS(p.imap, &imapclient.Options{TLSConfig: tlsConfig(t, dir), UnilateralDataHandler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(box, password).Wait(); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// messageID asks the console's API for the ID of the message with uid in
// folder of box.
func messageID(t testing.TB, addr, box, folder string, uid uint32) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/mailboxes/" + box)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m mailboxJSON
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Folders {
		for _, msg := range f.Messages {
			if f.Name == folder && msg.UID == uid {
				return msg.ID
			}
		}
	}
	t.Fatalf("no UID %d in %s of %s: %+v", uid, folder, box, m)
	return ""
}

// chromium is where Debian's package puts the browser; scripts/test.sh
// installs it.
const chromium = "/usr/bin/chromium"

// browser starts a headless Chromium with an empty profile and returns a
// context for driving one tab of it.
func browser(t testing.TB) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("the console test needs Chromium (apt-get install chromium): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now, so a missing or broken one fails here.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// TestConsoleInBrowser opens the console in a real browser: a deposit on
// the phone lights the lamp on the open page without a reload, the page's
// audio element loads the WAV, and a delete clicked on the page reaches a
// mail client idling in INBOX.
func TestConsoleInBrowser(t *testing.T) {
	bin := buildPBX(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	p := startPBX(t, bin, dir, "-user", "1001:secret1", "-user", "1002:secret2", "-http", addr)
	bctx := browser(t)
	ctx, cancel := context.WithTimeout(bctx, wait)
	defer cancel()

	box := `section[data-box="1001"]`
	if err := chromedp.Do(ctx,
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(box+`[data-lamp="off"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[data-box="1002"][data-lamp="off"]`)),
		// A mark that a reload would wipe out.
		chromedp.Evaluate[chromedp.Void](`window.loadedOnce = 1, undefined`),
	); err != nil {
		t.Fatalf("open the console: %v; stderr:\n%s", err, p.stderr)
	}

	expunged := make(chan uint32, 10)
	c := dialIMAP(t, p, dir, "1001", "secret1", &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { expunged <- seq },
	})
	defer c.Close()

	p.send("deposit 1001 5551234 Alice")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	row := box + ` .folder[data-folder="INBOX"] tr.msg[data-uid="1"]`
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(box+`[data-lamp="on"]`)),
		chromedp.WaitVisible(chromedp.CSS(row)),
	); err != nil {
		t.Fatalf("lamp after the deposit: %v; stderr:\n%s", err, p.stderr)
	}
	caller, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(row+` td.caller`)))
	if err != nil {
		t.Fatal(err)
	}
	sameLoad, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.loadedOnce === 1`))
	if err != nil {
		t.Fatal(err)
	}
	if !sameLoad {
		t.Error("the page was reloaded to show the deposit, want it live")
	}
	if caller != "5551234 (Alice)" {
		t.Errorf("caller on the page = %q, want %q", caller, "5551234 (Alice)")
	}
	if lamp := attr(t, ctx, `section[data-box="1002"]`, "data-lamp"); lamp != "off" {
		t.Errorf("1002's lamp = %q after a deposit into 1001, want off", lamp)
	}

	// The audio element loads the WAV: the browser reads its header and
	// knows the length of the 3-second tone.
	duration, err := chromedp.Run(ctx, chromedp.Poll[float64](`(() => {
		const a = document.querySelector('`+row+` audio');
		return a && a.readyState >= 1 && a.duration > 0 ? a.duration : false;
	})()`))
	if err != nil {
		state, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`(() => { const a = document.querySelector('`+row+` audio'); return a ? "readyState " + a.readyState + " error " + (a.error && a.error.code) + " src " + a.src : "no audio element"; })()`))
		t.Fatalf("audio element did not load: %v (%s)", err, state)
	}
	if duration < 2.9 || duration > 3.1 {
		t.Errorf("audio duration in the browser = %vs, want 3s", duration)
	}

	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(row+` button.delete`), chromedp.NodeVisible)); err != nil {
		t.Fatalf("click delete: %v", err)
	}
	select {
	case seq := <-expunged:
		if seq != 1 {
			t.Errorf("EXPUNGE %d in the idling client, want 1", seq)
		}
	case <-time.After(wait):
		t.Fatalf("the idling client got no EXPUNGE within %v of the click; stderr:\n%s", wait, p.stderr)
	}
	p.expect("MWI 1001 off 0/0 (0/0)")
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(box+`[data-lamp="off"]`)),
		chromedp.WaitVisible(chromedp.CSS(box+` .folder[data-folder="Trash"] tr.msg[data-uid="1"]`)),
	); err != nil {
		t.Fatalf("page after the delete: %v", err)
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	idle.Wait()
	p.send("list 1001 Trash")
	p.expect("ok 1", "1 new 5551234 3s Alice")

	// Undelete, heard and unheard from the page: each reaches the phone's
	// lamp and shows on the page.
	trashed := box + ` .folder[data-folder="Trash"] tr.msg[data-uid="1"]`
	back := box + ` .folder[data-folder="INBOX"] tr.msg[data-uid="2"]`
	for _, step := range []struct {
		click, lamp string
		mwi         string
		after       string
	}{
		{trashed + ` button.undelete`, "on", "MWI 1001 on 1/0 (0/0)", back + `[data-heard="false"]`},
		{back + ` button.heard`, "off", "MWI 1001 off 0/1 (0/0)", back + `[data-heard="true"]`},
		{back + ` button.unheard`, "on", "MWI 1001 on 1/0 (0/0)", back + `[data-heard="false"]`},
	} {
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(step.click), chromedp.NodeVisible)); err != nil {
			t.Fatalf("click %s: %v", step.click, err)
		}
		p.expect(step.mwi)
		if err := chromedp.Do(ctx,
			chromedp.WaitVisible(chromedp.CSS(box+`[data-lamp="`+step.lamp+`"]`)),
			chromedp.WaitVisible(chromedp.CSS(step.after)),
		); err != nil {
			t.Fatalf("page after clicking %s: %v", step.click, err)
		}
	}
	p.send("list 1001")
	p.expect("ok 1", "2 new 5551234 3s Alice")
	c.Logout().Wait()
	p.stdin.Close()
	p.waitExit()
}

func attr(t testing.TB, ctx context.Context, sel, name string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil || !v.Exists {
		t.Fatalf("attribute %s of %s: %v (present %v)", name, sel, err, v.Exists)
	}
	return v.Value
}
