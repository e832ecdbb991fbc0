% rtcontrol_feedback.m  -  neurofeedback from the rtcontrol subject agent in MATLAB / PsychToolbox.
%
% The agent (python main.py --subject) sends one JSON object per line on 127.0.0.1:8742 (--tcp-port),
% after this program's first line, a hello with the agent's consumer secret (the agent keeps it in
% consumer.secret in its home folder, ~/.rtcontrol or $RTCONTROL_HOME, and prints where when it starts):
%   -> {"type":"hello","name":"matlab","secret":"<contents of consumer.secret>"}
%   {"type":"hello","protocol":"rtcontrol-subject/1","consumer":"matlab-3"}
%   {"type":"run_start","run":"run-01","onset":{...},"display":{"low":0,"high":1,...},"extra":{}}
%   {"type":"feedback","run":"run-01","index":12,"value":0.63,"late":false}
%   {"type":"message","kind":"rest","text":"Rest","run":"run-01"}
%   {"type":"run_stop","run":"run-01"}
% and accepts lines back:
%   {"type":"response","key":"1","rt":0.532}          -> the experiment's project on the worker
%   {"type":"displayed","run":"run-01","index":12}    -> stamps "displayed" on the console timeline
% A wrong or missing secret gets {"type":"error","message":...} and the connection is closed.
% Needs MATLAB R2020b+ (tcpclient with readline/writeline); jsondecode/jsonencode are built in.

home = getenv("RTCONTROL_HOME");
if isempty(home)
    if ispc, home = fullfile(getenv("USERPROFILE"), ".rtcontrol"); else, home = fullfile(getenv("HOME"), ".rtcontrol"); end
end
secret = strtrim(fileread(fullfile(home, "consumer.secret")));

t = tcpclient("127.0.0.1", 8742, "Timeout", 5);
configureTerminator(t, "LF");
writeline(t, jsonencode(struct("type", "hello", "name", "matlab", "secret", secret)));
reply = jsondecode(readline(t));
if reply.type ~= "hello", error("rtcontrol: the subject agent refused: %s", reply.message); end
t.Timeout = 0.05;
low = 0; high = 1; level = 0; running = true;

% In a PsychToolbox loop: draw, flip, then read whatever arrived (never blocks for long).
while running
    % ... Screen('FillRect', win, ...) using 'level' (0..1) for the thermometer; Screen('Flip', win) ...
    while t.NumBytesAvailable > 0
        msg = jsondecode(readline(t));
        switch msg.type
            case "run_start"
                low = msg.display.low; high = msg.display.high;
            case "feedback"
                v = msg.value;
                if isstruct(v), v = v.value; end
                level = min(1, max(0, (v - low) / (high - low)));
                writeline(t, jsonencode(struct("type", "displayed", "run", msg.run, "index", msg.index)));
            case "message"
                fprintf("%s: %s\n", msg.kind, msg.text);
                if msg.kind == "run_over", running = false; end
            case "run_stop"
                running = false;
        end
    end
    % A button press (e.g. from KbCheck) goes back as a response:
    % writeline(t, jsonencode(struct("type", "response", "key", "1", "rt", 0.532)));
    pause(0.005);
end
clear t
