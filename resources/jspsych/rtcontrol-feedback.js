/*
 * rtcontrol feedback in the browser: a websocket to the subject agent that PUSHES every feedback value,
 * message and run start/stop (no polling), and carries responses back.
 *
 *   const fb = RTControl.connect();          // ws://<this page's host>/ws, reconnects by itself
 *                                            // (says the ?secret=... of this page's URL in its hello)
 *   fb.on("feedback", (f) => draw(f.value)); // {run, index, value, late}
 *   fb.waitFor(5, 3000).then(...);           // the value of volume 5, or reject after 3 s
 *   fb.sendResponse({button: 1});            // reaches the experiment's project on the worker
 *   fb.displayed(f.run, f.index);            // stamps "displayed" on the console's timeline
 *
 * Served by `python main.py --subject` at http://127.0.0.1:<local-port>/rtcontrol-feedback.js. The agent
 * lets a page in only with its consumer secret: open the page at the address the agent prints
 * (http://127.0.0.1:<local-port>/?secret=...), or pass RTControl.connect(url, {secret: "..."}).
 */
(function (global) {
  "use strict";

  class FeedbackSocket {
    constructor(url, options) {
      const scheme = global.location && global.location.protocol === "https:" ? "wss" : "ws";
      this.url = url || scheme + "://" + global.location.host + "/ws";
      options = options || {};
      this.secret = options.secret || new URLSearchParams(global.location ? global.location.search : "").get("secret");
      this.helloName = options.name || "jspsych";
      this.refused = null; // the agent's reason when it refused this page (wrong or missing secret)
      this.values = new Map(); // "run#index" -> feedback
      this.latest = null;
      this.run = null; // run settings from run_start
      this.connected = false;
      this.name = null;
      this._listeners = {};
      this._waiters = [];
      this._backoff = 100;
      this._closed = false;
      this._open();
    }

    on(type, fn) {
      (this._listeners[type] = this._listeners[type] || []).push(fn);
      return () => this.off(type, fn);
    }

    off(type, fn) {
      this._listeners[type] = (this._listeners[type] || []).filter((f) => f !== fn);
    }

    waitFor(index, timeoutMs, run) {
      const found = this._find(index, run);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { index, run, resolve, timer: null };
        if (timeoutMs != null) {
          w.timer = setTimeout(() => {
            this._waiters = this._waiters.filter((x) => x !== w);
            reject(new Error("no feedback for volume " + index + " within " + timeoutMs + " ms"));
          }, timeoutMs);
        }
        this._waiters.push(w);
      });
    }

    sendResponse(data) {
      this._send(Object.assign({}, data || {}, { type: "response" }));
    }

    displayed(run, index) {
      this._send({ type: "displayed", run: run, index: index });
    }

    close() {
      this._closed = true;
      if (this.ws) this.ws.close();
    }

    _find(index, run) {
      run = run || (this.run && this.run.run);
      if (run) return this.values.get(run + "#" + index) || null;
      for (const v of Array.from(this.values.values()).reverse()) if (v.index === index) return v;
      return null;
    }

    _send(msg) {
      if (!this.ws || this.ws.readyState !== 1) throw new Error("not connected to the subject agent at " + this.url);
      this.ws.send(JSON.stringify(msg));
    }

    _emit(type, payload) {
      for (const fn of this._listeners[type] || []) {
        try {
          fn(payload);
        } catch (e) {
          console.error("rtcontrol listener for " + type + " failed", e);
        }
      }
    }

    _open() {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: "hello", name: this.helloName, secret: this.secret || "" }));
        this.connected = true;
        this._backoff = 100;
        this._emit("open", {});
      };
      ws.onmessage = (event) => {
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        this._handle(msg);
      };
      ws.onclose = (event) => {
        this.connected = false;
        this._emit("close", {});
        if (event && event.code === 1008) {
          // refused (no or wrong secret): retrying cannot help
          this.refused = this.refused || event.reason || "refused by the subject agent";
          this._emit("refused", { message: this.refused });
          return;
        }
        if (!this._closed) {
          setTimeout(() => this._open(), this._backoff);
          this._backoff = Math.min(this._backoff * 2, 2000);
        }
      };
    }

    _handle(msg) {
      switch (msg.type) {
        case "feedback": {
          const f = { run: msg.run, index: msg.index, value: msg.value, late: !!msg.late, received: performance.now() };
          this.values.set(f.run + "#" + f.index, f);
          this.latest = f;
          this._waiters = this._waiters.filter((w) => {
            if (w.index === f.index && (!w.run || w.run === f.run)) {
              clearTimeout(w.timer);
              w.resolve(f);
              return false;
            }
            return true;
          });
          this._emit("feedback", f);
          break;
        }
        case "hello":
          this.name = msg.consumer;
          break;
        case "error":
          if (!this.name) this.refused = msg.message; // before our hello was accepted: the reason
          this._emit("error", msg);
          break;
        case "run_start":
          this.run = msg;
          this._emit("run_start", msg);
          break;
        case "run_stop":
          this.run = null;
          this._emit("run_stop", msg);
          break;
        default:
          this._emit(msg.type, msg);
      }
    }
  }

  let shared = null;
  global.RTControl = {
    FeedbackSocket: FeedbackSocket,
    /** The page's one connection (made on first call). */
    connect: function (url, options) {
      if (!shared) shared = new FeedbackSocket(url, options);
      return shared;
    },
  };
})(window);
