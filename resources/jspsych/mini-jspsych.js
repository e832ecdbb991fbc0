/*
 * A minimal stand-in for jsPsych, used when the real library is not installed (offline presentation PC,
 * CI without npm): it runs a timeline of plugin trials one after another, which is all the rtcontrol page
 * needs. Install the real jsPsych with `npm install --prefix resources/jspsych/vendor jspsych@8`; the page
 * then uses it instead (see index.html).
 */
(function (global) {
  "use strict";
  if (global.jsPsychModule) return; // the real jsPsych is loaded

  const ParameterType = { BOOL: 0, STRING: 1, INT: 2, FLOAT: 3, FUNCTION: 4, KEY: 5, KEYS: 6, SELECT: 7,
                          HTML_STRING: 8, IMAGE: 9, AUDIO: 10, VIDEO: 11, OBJECT: 12, COMPLEX: 13, TIMELINE: 14 };

  function initJsPsych(opts) {
    opts = opts || {};
    const results = [];
    let el = opts.display_element || document.body;
    if (typeof el === "string") el = document.getElementById(el);
    let finish = null;
    const jsPsych = {
      data: { get: () => ({ values: () => results.slice() }) },
      getDisplayElement: () => el,
      finishTrial: (data) => { if (finish) finish(data || {}); },
      run: async (timeline) => {
        for (const trial of timeline) {
          const Plugin = trial.type;
          const params = {};
          for (const [k, spec] of Object.entries(Plugin.info.parameters || {})) params[k] = spec.default;
          Object.assign(params, trial);
          const plugin = new Plugin(jsPsych);
          const data = await new Promise((resolve) => {
            finish = resolve;
            plugin.trial(el, params);
          });
          finish = null;
          results.push(Object.assign({ trial_type: Plugin.info.name }, data, trial.data || {}));
          if (trial.on_finish) trial.on_finish(data);
        }
        if (opts.on_finish) opts.on_finish(jsPsych.data.get());
      },
    };
    return jsPsych;
  }

  global.jsPsychModule = { initJsPsych: initJsPsych, ParameterType: ParameterType, builtin: true };
  global.initJsPsych = initJsPsych;
})(window);
