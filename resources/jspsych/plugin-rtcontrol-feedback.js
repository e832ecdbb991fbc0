/*
 * jsPsych plugin "rtcontrol-feedback" (jsPsych 7 and 8): a thermometer that moves with every feedback
 * value the subject agent pushes, a fixation cross, and key presses sent back as responses.
 *
 *   const trial = {
 *     type: jsPsychRtcontrolFeedback,
 *     trial_duration: null,          // ms; null: until the run stops ("run over")
 *     volume: null,                  // a volume index: end the trial once its feedback was shown
 *     choices: ["1", "2", "3", "4"], // keys sent to the experiment as {key, rt, volume}
 *     response_ends_trial: false,
 *   };
 *
 * Colours and the low..high scale come from the run's display settings (console), unless given here.
 * Needs rtcontrol-feedback.js on the page (served by the agent next to this file).
 */
var jsPsychRtcontrolFeedback = (function (jspsych) {
  "use strict";

  const T = (jspsych && jspsych.ParameterType) || {
    INT: 1, FLOAT: 2, BOOL: 3, STRING: 4, KEYS: 5, HTML_STRING: 6,
  };

  const info = {
    name: "rtcontrol-feedback",
    version: "1.0.0",
    parameters: {
      trial_duration: { type: T.INT, default: null },
      volume: { type: T.INT, default: null },
      choices: { type: T.KEYS, default: ["1", "2", "3", "4"] },
      response_ends_trial: { type: T.BOOL, default: false },
      end_on_run_stop: { type: T.BOOL, default: true },
      prompt: { type: T.HTML_STRING, default: "" },
      low: { type: T.FLOAT, default: null },
      high: { type: T.FLOAT, default: null },
      fill: { type: T.STRING, default: null },
      background: { type: T.STRING, default: null },
      foreground: { type: T.STRING, default: null },
    },
    data: {
      feedback: { type: T.STRING },
      responses: { type: T.STRING },
    },
  };

  function setting(trial, run, key, fallback) {
    if (trial[key] !== null && trial[key] !== undefined) return trial[key];
    const d = run && run.display;
    return d && d[key] !== undefined ? d[key] : fallback;
  }

  class RtcontrolFeedbackPlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    trial(display_element, trial) {
      const fb = window.RTControl.connect();
      const start = performance.now();
      const shown = [];
      const responses = [];
      let ended = false;
      let last = null;

      display_element.innerHTML =
        '<div id="rtc-stage" style="position:relative;width:100vw;height:100vh;">' +
        '<div id="rtc-message" style="position:absolute;top:6%;width:100%;text-align:center;font-size:5vh"></div>' +
        '<div id="rtc-fix" style="position:absolute;left:50%;top:50%;transform:translate(-50%,-50%);font-size:6vh">+</div>' +
        '<div id="rtc-thermo" data-index="" data-value="" style="position:absolute;left:72%;top:20%;width:6vw;' +
        'height:60vh;border:3px solid;box-sizing:border-box">' +
        '<div id="rtc-fill" style="position:absolute;bottom:0;width:100%;height:0%"></div></div>' +
        '<div id="rtc-prompt" style="position:absolute;bottom:5%;width:100%;text-align:center"></div></div>';
      const stage = display_element.querySelector("#rtc-stage");
      const thermo = display_element.querySelector("#rtc-thermo");
      const fill = display_element.querySelector("#rtc-fill");
      const message = display_element.querySelector("#rtc-message");
      display_element.querySelector("#rtc-prompt").innerHTML = trial.prompt;

      const style = () => {
        const run = fb.run;
        stage.style.background = setting(trial, run, "background", "#000000");
        stage.style.color = setting(trial, run, "foreground", "#ffffff");
        thermo.style.borderColor = stage.style.color;
        fill.style.background = setting(trial, run, "fill", "#2ecc71");
      };
      style();

      const show = (f) => {
        const low = setting(trial, fb.run, "low", 0);
        const high = setting(trial, fb.run, "high", 1);
        const v = typeof f.value === "object" && f.value !== null ? f.value.value : f.value;
        const frac = typeof v === "number" ? Math.min(1, Math.max(0, (v - low) / (high - low))) : 0;
        fill.style.height = (frac * 100).toFixed(1) + "%";
        thermo.dataset.index = String(f.index);
        thermo.dataset.value = String(v);
        thermo.dataset.late = String(f.late);
        if (message.dataset.kind === "rest") message.textContent = "";
        last = f;
        // stamp "displayed" once the browser has painted the new frame
        requestAnimationFrame(() => requestAnimationFrame(() => {
          shown.push({ run: f.run, index: f.index, value: v, late: f.late, t: performance.now() - start });
          try { fb.displayed(f.run, f.index); } catch (e) { /* link down: the value was still shown */ }
          if (trial.volume !== null && f.index >= trial.volume) end();
        }));
      };

      const onKey = (e) => {
        const allowed = trial.choices === "ALL_KEYS" || (trial.choices || []).includes(e.key);
        if (!allowed || ended) return;
        const r = { key: e.key, rt: performance.now() - start, volume: last ? last.index : null };
        responses.push(r);
        try { fb.sendResponse(r); } catch (err) { console.error(err); }
        if (trial.response_ends_trial) end();
      };

      const unsubscribe = [
        fb.on("feedback", show),
        fb.on("run_start", style),
        fb.on("message", (m) => {
          message.textContent = m.text || "";
          message.dataset.kind = m.kind || "";
          if (m.kind === "run_over" && trial.end_on_run_stop) end();
        }),
        fb.on("run_stop", () => { if (trial.end_on_run_stop) end(); }),
      ];
      document.addEventListener("keydown", onKey);
      let timer = null;
      if (trial.trial_duration !== null) timer = setTimeout(end, trial.trial_duration);
      if (fb.latest && trial.volume === null) show(fb.latest);

      const self = this;
      function end() {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        document.removeEventListener("keydown", onKey);
        unsubscribe.forEach((u) => u());
        display_element.innerHTML = "";
        self.jsPsych.finishTrial({ feedback: JSON.stringify(shown), responses: JSON.stringify(responses) });
      }
    }
  }
  RtcontrolFeedbackPlugin.info = info;
  return RtcontrolFeedbackPlugin;
})(typeof jsPsychModule !== "undefined" ? jsPsychModule : undefined);
