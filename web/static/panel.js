// The agent panel (web/panel.py): shows the view the controller pushes over the
// WebSocket and sends the agent's buttons to POST /panel/action with the CSRF token.
// Every text from the server goes in with textContent, never as HTML: caller names come
// from the phone network. Buttons are enabled only when the state makes them meaningful;
// the controller checks again (the panel is a convenience, not the authority).
(function () {
  "use strict";

  var root = document.getElementById("panel");
  if (!root) { return; }
  var CSRF = root.getAttribute("data-csrf") || "";
  var TZ = root.getAttribute("data-tz") || undefined;
  var ME = root.getAttribute("data-agent") || "";
  var ALERT_BEFORE = 10; // seconds before the hold limit when the agent is alerted (R4)
  var ACTIVE_STAGES = ["consent", "ringing", "consult", "accepted"];

  var STATES = {
    "available": ["空闲", "Available"],
    "ringing": ["振铃中", "Ringing"],
    "on-call": ["通话中", "On call"],
    "holding": ["等待中", "Holding"],
    "transfer": ["转接中", "Transferring"],
    "wrap-up": ["整理中", "Wrap-up"],
    "callback": ["回电中", "Callback"],
    "offline": ["离线", "Offline"]
  };
  var STAGES = {
    "consent": "等待客户同意转接 · ask the caller's consent",
    "ringing": "正在呼叫转接目标 · ringing the target",
    "consult": "目标已接听，正在介绍来电 · target answered: tell them who and why",
    "accepted": "目标已接受，可以完成转接 · target accepted: complete the transfer",
    "done": "已转接 · transferred",
    "failed": "转接未成功，客户已回到通话 · transfer failed: the caller is back with you"
  };
  var TARGET_STAGES = {
    "ringing": "有一个转接来电 · a colleague is transferring a call to you",
    "consult": "请听取来电者信息后接受或拒绝 · hear who and why, then accept or decline",
    "accepted": "已接受，等待同事完成转接 · accepted: waiting for the handover",
    "done": "客户已转接给您 · the caller is now with you",
    "failed": "转接已取消 · the transfer was called off"
  };
  var CN_NUM = ["零", "一", "两", "三", "四", "五", "六", "七", "八", "九", "十"];
  var CN_DIGIT = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"];
  // R8: a callback is placed agent first, then the customer (the agent speaks first).
  var CALLBACK_STAGES = {
    "agent-ringing": "正在呼叫您的话机，请接听 · ringing you: pick up",
    "dialing": "正在拨打客户 · dialling the customer",
    "connected": "客户已接通：请先报公司名称和您的姓名 · connected: introduce yourself first",
    "closing": "正在结束回电 · closing",
    "no-answer": "客户未接听 · no answer",
    "failed": "回电未能接通 · the callback failed"
  };
  var FOLLOWUP_STATUS = {
    "overdue": ["逾期", "overdue"],
    "open": ["待办", "open"],
    "done": ["已完成", "done"]
  };
  var FOLLOWUP_KINDS = { "promise": ["承诺", "promise"], "callback": ["回电请求", "callback"] };
  var DEFAULT_PROMISE_DAYS = 3;
  var DEFAULT_MAX_DAYS = 30;

  var view = null;
  var offset = 0; // server clock minus browser clock, seconds
  var lastServer = {}; // caller fields as last pushed, so typing is not overwritten
  var lastCallId = null;
  var lastLimits = "";
  var lastTargets = "";
  var lastFollowups = null;
  var lastPromiseDefaults = "";
  var busy = false;

  function $(id) { return document.getElementById(id); }
  function text(id, value) {
    var el = $(id);
    if (el) { el.textContent = (value === null || value === undefined || value === "") ? "—" : String(value); }
  }
  function show(id, on) { var el = $(id); if (el) { el.hidden = !on; } }
  function enable(id, on) { var el = $(id); if (el) { el.disabled = !on; } }
  function now() { return Date.now() / 1000 + offset; }

  function clock(seconds) {
    var s = Math.max(0, Math.ceil(seconds));
    var m = Math.floor(s / 60);
    s = s % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }
  function limitLabel(seconds) {
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (!m) { return s + " 秒 (" + s + " s)"; }
    if (!s) { return m + " 分钟 (" + m + " min)"; }
    return m + " 分 " + s + " 秒 (" + m + " min " + s + " s)";
  }
  function limitSpoken(seconds) {
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (!m) { return "三十秒"; }
    var mm = m <= 10 ? CN_NUM[m] : String(m);
    return mm + (s ? "分半钟" : "分钟");
  }
  function cnCount(n) {
    if (n <= 10) { return CN_NUM[n]; }
    var tens = Math.floor(n / 10), ones = n % 10;
    if (tens >= 10) { return String(n); }
    return (tens === 1 ? "" : CN_DIGIT[tens]) + "十" + (ones ? CN_DIGIT[ones] : "");
  }
  function promiseText(days) { return cnCount(days) + "个工作日后给您答复"; }
  function promiseDays() { return parseInt($("promise-days").value, 10) || 0; }
  function localTime(epoch) {
    try {
      return new Date(epoch * 1000).toLocaleTimeString("zh-CN", { timeZone: TZ, hour12: false });
    } catch (e) {
      return new Date(epoch * 1000).toLocaleTimeString("zh-CN", { hour12: false });
    }
  }

  function message(textValue, kind) {
    if (!textValue) { return; }
    var list = $("messages");
    var li = document.createElement("li");
    li.className = "msg " + (kind || "");
    var time = document.createElement("span");
    time.className = "time";
    time.textContent = localTime(now());
    li.appendChild(time);
    li.appendChild(document.createTextNode(" " + textValue));
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 30) { list.removeChild(list.lastChild); }
  }

  function setConn(state, label) {
    var el = $("conn");
    el.className = "conn " + state;
    el.textContent = label;
  }

  // ------------------------------------------------------------ rendering

  function chosenLimit() {
    var checked = document.querySelector('input[name="limit_choice"]:checked');
    if (!checked) { return 0; }
    if (checked.value === "custom") { return parseInt($("limit-custom").value, 10) || 0; }
    return parseInt(checked.value, 10) || 0;
  }

  function renderLimits(v) {
    var limits = (v.hold_limits || []).map(Number).filter(function (x) { return x > 0; });
    var key = JSON.stringify(limits) + "|" + v.default_hold_limit;
    if (key === lastLimits) { return; }
    lastLimits = key;
    var max = limits.length ? Math.max.apply(null, limits) : 600;
    var presets = [30, 60, 120].filter(function (x) { return limits.indexOf(x) >= 0 && x <= max; });
    var def = Number(v.default_hold_limit) || presets[0] || 60;
    if (presets.indexOf(def) < 0 && limits.indexOf(def) >= 0) { presets.push(def); presets.sort(function (a, b) { return a - b; }); }
    var box = $("hold-limits");
    box.textContent = "";
    presets.forEach(function (seconds) {
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "radio";
      input.name = "limit_choice";
      input.value = String(seconds);
      input.id = "limit-" + seconds;
      input.checked = seconds === def;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + limitLabel(seconds)));
      box.appendChild(label);
    });
    var custom = $("limit-custom");
    custom.max = String(max);
    $("limit-max").textContent = "（30 秒的倍数，最多 " + max + " 秒 · multiples of 30 s, max " + max + " s）";
    if (presets.indexOf(def) < 0) { $("limit-custom-choice").checked = true; custom.value = String(def); }
    renderAsk();
  }

  function renderAsk() {
    var name = (view && view.call && view.call.caller_name) || "XX先生/小姐";
    var limit = chosenLimit() || 60;
    $("hold-ask").textContent = "“" + name + "，就您所提的这个问题我需要查询相关信息，请您稍等" +
      limitSpoken(limit) + "好吗？”";
  }

  function renderTargets(v) {
    var depts = v.departments || [];
    var agents = (v.agents || []).filter(function (a) { return a.name !== ME; });
    var key = JSON.stringify([depts, agents]);
    if (key === lastTargets) { return; }
    lastTargets = key;
    var select = $("transfer-target");
    var previous = select.value;
    select.textContent = "";
    var placeholder = document.createElement("option");
    placeholder.value = "";
    placeholder.textContent = "— 选择部门或坐席 choose —";
    select.appendChild(placeholder);
    var wanted = $("wanted-list");
    wanted.textContent = "";
    if (depts.length) {
      var g1 = document.createElement("optgroup");
      g1.label = "部门 Departments";
      depts.forEach(function (d) {
        var o = document.createElement("option");
        o.value = "dept:" + d.name;
        o.textContent = d.name + (d.number ? " (" + d.number + ")" : "");
        g1.appendChild(o);
        var w = document.createElement("option");
        w.value = d.name;
        wanted.appendChild(w);
      });
      select.appendChild(g1);
    }
    if (agents.length) {
      var g2 = document.createElement("optgroup");
      g2.label = "坐席 Agents";
      agents.forEach(function (a) {
        var o = document.createElement("option");
        o.value = a.name;
        var st = STATES[a.state] || [a.state, ""];
        o.textContent = a.name + " · " + st[0] + " " + st[1];
        o.disabled = a.state !== "available";
        g2.appendChild(o);
        var w = document.createElement("option");
        w.value = a.name;
        wanted.appendChild(w);
      });
      select.appendChild(g2);
    }
    select.value = previous;
    if (select.value !== previous) { select.value = ""; }
  }

  function renderCallerFields(call) {
    var callId = call ? call.call_id : null;
    if (callId !== lastCallId) {
      lastCallId = callId;
      lastServer = {};
      ["caller-name", "purpose", "wanted"].forEach(function (id) { $(id).value = ""; });
      $("note-text").value = "";
    }
    if (!call) { return; }
    [["caller-name", "caller_name"], ["purpose", "purpose"], ["wanted", "wanted"]].forEach(function (pair) {
      var input = $(pair[0]);
      var value = call[pair[1]] || "";
      if (value !== lastServer[pair[1]] && document.activeElement !== input) {
        input.value = value;
        lastServer[pair[1]] = value;
      }
    });
  }

  // R8: the promise form's defaults come from the config; reset for every new call.
  function renderPromiseDefaults(v, newCall) {
    var def = Number(v.promise_working_days) || DEFAULT_PROMISE_DAYS;
    var max = Number(v.max_working_days) || DEFAULT_MAX_DAYS;
    var key = def + "|" + max;
    var days = $("promise-days");
    days.max = String(max);
    if (key === lastPromiseDefaults && !newCall) { return; }
    lastPromiseDefaults = key;
    days.value = String(def);
    $("promise-text").value = promiseText(def);
    $("promise-days").setAttribute("data-last", String(def));
    renderPromiseAsk();
    if (newCall) { show("promise-result", false); }
  }

  function renderPromiseAsk() {
    var days = promiseDays();
    $("promise-ask").textContent = "“不好意思，麻烦您耐心等待一下，" +
      (days > 0 ? cnCount(days) : "三") + "个工作日后我们会给您答复。”";
  }

  // The text follows the number of days until the agent writes their own words.
  function onPromiseDays() {
    var days = promiseDays();
    var input = $("promise-days");
    var last = parseInt(input.getAttribute("data-last") || "0", 10);
    var textInput = $("promise-text");
    if (days > 0 && last > 0 && textInput.value === promiseText(last)) {
      textInput.value = promiseText(days);
    }
    if (days > 0) { input.setAttribute("data-last", String(days)); }
    renderPromiseAsk();
  }

  function sortedFollowups(items) {
    var rank = { "overdue": 0, "open": 1, "done": 2 };
    return items.map(function (f, i) { return [f, i]; }).sort(function (a, b) {
      var ra = rank[a[0].status] === undefined ? 1 : rank[a[0].status];
      var rb = rank[b[0].status] === undefined ? 1 : rank[b[0].status];
      if (ra !== rb) { return ra - rb; }
      var da = String(a[0].due || ""), db = String(b[0].due || "");
      if (da !== db) { return da < db ? -1 : 1; }
      return a[1] - b[1];
    }).map(function (pair) { return pair[0]; });
  }

  function span(cls, value) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = value;
    return el;
  }

  function followupButton(action, id, label, hint, cls) {
    var b = document.createElement("button");
    b.type = "button";
    b.name = "action";
    b.value = action;
    b.className = cls || "";
    b.id = (action === "place-callback" ? "fu-callback-" : "fu-done-") + id;
    b.setAttribute("data-followup", id);
    b.appendChild(document.createTextNode(label));
    b.appendChild(span("en", hint));
    b.addEventListener("click", function () {
      if (b.disabled) { return; }
      send(action, { followup_id: id }, b);
    });
    return b;
  }

  // R8: the agent's follow-ups, overdue ones first and flagged red.
  function renderFollowups(v) {
    var items = sortedFollowups((v.followups || []).slice());
    var key = JSON.stringify(items);
    if (key !== lastFollowups) {
      lastFollowups = key;
      var list = $("followups");
      list.textContent = "";
      items.forEach(function (f) {
        var id = String(f.id || "");
        var status = FOLLOWUP_STATUS[f.status] ? f.status : "open";
        var li = document.createElement("li");
        li.className = "followup " + status;
        li.setAttribute("data-status", status);
        li.setAttribute("data-id", id);
        var head = document.createElement("div");
        head.className = "fu-head";
        var st = FOLLOWUP_STATUS[status];
        head.appendChild(span("fu-status", st[0] + " " + st[1]));
        head.appendChild(span("fu-due", "到期 " + (f.due || "—")));
        var kind = FOLLOWUP_KINDS[f.kind] || [String(f.kind || ""), ""];
        head.appendChild(span("fu-kind", kind[0] + " " + kind[1]));
        li.appendChild(head);
        li.appendChild(span("fu-text", f.text || "—"));
        var meta = [];
        if (f.number) { meta.push("号码 " + f.number); }
        meta.push(f.owner ? "负责 " + f.owner : "任何坐席 any agent" + (f.queue ? " · " + f.queue : ""));
        li.appendChild(span("fu-meta", meta.join(" · ")));
        var actions = document.createElement("div");
        actions.className = "actions";
        actions.appendChild(followupButton("place-callback", id, "回电", "Call back", "primary"));
        actions.appendChild(followupButton("followup-done", id, "已完成", "Done", ""));
        li.appendChild(actions);
        list.appendChild(li);
      });
      var open = items.filter(function (f) { return f.status !== "done"; }).length;
      var overdue = items.filter(function (f) { return f.status === "overdue"; }).length;
      $("followups-count").textContent = items.length ?
        (open + " 待办" + (overdue ? " · " + overdue + " 逾期" : "")) : "";
      $("followups-count").classList.toggle("bad", overdue > 0);
      show("followups-empty", items.length === 0);
    }
    var free = v.state === "available";
    items.forEach(function (f) {
      var id = String(f.id || "");
      enable("fu-callback-" + id, free && !!f.number && f.status !== "done");
      enable("fu-done-" + id, f.status !== "done");
    });
  }

  function renderCallback(v, call) {
    var cb = call && call.callback;
    var on = !!cb || v.state === "callback";
    show("callback-box", on);
    if (!on) { return; }
    cb = cb || {};
    text("callback-opening", cb.opening_line || "您好，我是……（公司名称），我是" + ME + "。");
    text("callback-number", cb.number || (call && call.caller_number));
    text("callback-stage", CALLBACK_STAGES[cb.stage] || cb.stage);
    $("callback-box").setAttribute("data-stage", cb.stage || "");
  }

  function render() {
    var v = view;
    if (!v) { return; }
    var state = v.state || "offline";
    var call = v.call || null;
    var hold = call && call.hold;
    var tr = call && call.transfer;
    var role = tr ? tr.role : null;
    var stage = tr ? tr.stage : null;
    var active = !!tr && ACTIVE_STAGES.indexOf(stage) >= 0;
    var asked = !!(call && call.closing && call.closing.stage === "asked");
    var cb = call && call.callback;
    var newCall = !!call && call.call_id !== lastCallId; // a new conversation: fresh forms

    var badge = $("state-badge");
    var label = STATES[state] || [state, ""];
    badge.setAttribute("data-state", state);
    badge.textContent = label[0] + " ";
    var en = document.createElement("span");
    en.className = "en";
    en.textContent = label[1];
    badge.appendChild(en);
    document.title = label[0] + " · 坐席面板 " + ME;

    text("caller-number", call && call.caller_number);
    $("caller-name-shown").textContent = call && call.caller_name ? call.caller_name : "";
    text("script", v.script);
    var cue = role === "target" && (stage === "done" || stage === "accepted");
    $("script-card").classList.toggle("cue", !!cue);

    // Hold box (the countdown itself is ticked below).
    show("hold-box", !!hold);
    if (hold) {
      text("hold-limit-shown", limitLabel(Number(hold.limit_seconds) || 0));
      text("hold-reason-shown", hold.reason);
    }

    // Transfer: the first agent's progress, or the target's consultation.
    show("transfer-box", role === "first");
    if (role === "first") {
      text("transfer-target-shown", String(tr.target || "").replace(/^dept:/, "部门 "));
      text("transfer-stage", STAGES[stage] || stage);
      text("transfer-consent", tr.consent ? "✓ 已同意 agreed" : "✗ 尚未同意 not yet");
      $("transfer-box").setAttribute("data-stage", stage || "");
    }
    show("consult-box", role === "target");
    if (role === "target") {
      text("consult-name", call.caller_name || call.caller_number);
      text("consult-purpose", call.purpose);
      text("consult-wanted", call.wanted);
      text("consult-stage", TARGET_STAGES[stage] || stage);
    }

    // R8: the caller was asked whether they have more; the agent answers with a button.
    show("closing-box", asked);
    renderCallback(v, call);

    renderLimits(v);
    renderTargets(v);
    renderPromiseDefaults(v, newCall);
    renderCallerFields(call);
    renderAsk();
    renderFollowups(v);

    var canTalk = !!call && (state === "on-call" || state === "holding");
    enable("btn-caller-info", !!call);
    enable("btn-hold", !!call && state === "on-call" && !active && !asked);
    enable("btn-resume", state === "holding" && !active);
    enable("btn-transfer", canTalk && !active && !asked && role !== "target");
    enable("btn-consent", role === "first" && stage === "consent" && !tr.consent);
    enable("btn-complete-transfer", role === "first" && stage === "accepted");
    enable("btn-cancel-transfer", role === "first" && active);
    enable("btn-accept", role === "target" && (stage === "ringing" || stage === "consult"));
    enable("btn-decline", role === "target" && (stage === "ringing" || stage === "consult"));
    enable("btn-leave", !!call && state !== "ringing" && !active);
    enable("btn-note", !!call);
    var talking = state === "on-call" || (state === "callback" && !!cb && cb.stage === "connected");
    enable("btn-end-call", !!call && talking && !active && !asked && role !== "target");
    enable("btn-end-call-confirm", asked);
    enable("btn-closing-resume", asked);
    enable("btn-promise", !!call && (talking || state === "holding"));
    tick();
  }

  function tick() {
    var call = view && view.call;
    var hold = call && call.hold;
    if (call && call.since) {
      $("call-since").textContent = "来电 " + localTime(call.since) + " · " + clock(now() - call.since);
    } else {
      $("call-since").textContent = "";
    }
    var box = $("hold-box");
    if (!hold) {
      box.classList.remove("alerting", "over");
      show("hold-alert", false);
      return;
    }
    var left = Number(hold.ends_at) - now();
    var countdown = $("hold-countdown");
    var alerting = left <= ALERT_BEFORE || !!hold.alert;
    box.classList.toggle("alerting", alerting);
    box.classList.toggle("over", left <= 0);
    if (left > 0) {
      countdown.textContent = clock(left);
    } else {
      countdown.textContent = "+" + clock(-left);
    }
    var alertEl = $("hold-alert");
    if (left <= 0) {
      alertEl.textContent = "⚠ 已到等待时限，请立即回到通话！The hold limit is reached: go back to the caller now.";
    } else if (alerting) {
      alertEl.textContent = "⚠ 还有 " + Math.ceil(left) + " 秒到等待时限，请回到通话。" +
        Math.ceil(left) + " s to the hold limit: go back to the caller.";
    }
    alertEl.hidden = !alerting;
    if (alerting) { document.title = "⚠ " + clock(Math.max(0, left)) + " · 等待即将超时"; }
  }

  // ------------------------------------------------------------ actions

  function collect(form, action) {
    var params = {};
    if (action === "end-call") {
      // The closing box's button closes; the end-call form asks first when ticked.
      params.ask_more = form.id === "closing-form" ? "0" : ($("end-ask-more").checked ? "1" : "0");
    } else if (action === "promise") {
      params.text = $("promise-text").value;
      params.working_days = $("promise-days").value;
    }
    if (action === "hold") {
      params.reason = $("hold-reason").value;
      params.limit_seconds = String(chosenLimit());
    } else if (action === "transfer") {
      params.target = $("transfer-target").value;
    } else if (action === "note") {
      params.text = $("note-text").value;
    } else if (action === "caller-info") {
      params.caller_name = $("caller-name").value;
      params.purpose = $("purpose").value;
      params.wanted = $("wanted").value;
    }
    return params;
  }

  function send(action, params, button) {
    if (busy) { return; }
    busy = true;
    if (button) { button.classList.add("sending"); }
    fetch("/panel/action", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF, "Accept": "application/json" },
      body: JSON.stringify({ action: action, params: params })
    }).then(function (response) {
      if (response.status === 401) { location.href = "/panel/login"; return null; }
      return response.json().then(function (body) { return [response, body]; });
    }).then(function (pair) {
      if (!pair) { return; }
      var body = pair[1] || {};
      message(body.message || (body.ok ? "已完成 done" : "未完成 not done"), body.ok ? "ok" : "err");
      if (body.ok && action === "note") { $("note-text").value = ""; }
      if (action === "promise") {
        var result = $("promise-result");
        result.textContent = body.message || "";
        result.className = "promise-result " + (body.ok ? "ok" : "err");
        result.hidden = !body.message;
      }
      if (body.ok && action === "caller-info") {
        lastServer.caller_name = params.caller_name;
        lastServer.purpose = params.purpose;
        lastServer.wanted = params.wanted;
      }
    }).catch(function () {
      message("网络错误，操作未送达 · network error: the action was not sent", "err");
    }).finally(function () {
      busy = false;
      if (button) { button.classList.remove("sending"); }
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[action='/panel/action']"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = event.submitter;
      if (!button || button.name !== "action" || button.disabled) { return; }
      send(button.value, collect(form, button.value), button);
    });
  });
  $("hold-form").addEventListener("change", renderAsk);
  $("promise-days").addEventListener("input", onPromiseDays);
  $("limit-custom").addEventListener("focus", function () { $("limit-custom-choice").checked = true; renderAsk(); });

  // ------------------------------------------------------------ WebSocket

  var retry = 1000;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/panel/ws");
    ws.onopen = function () {
      retry = 1000;
      setConn("live", "● 实时 live");
    };
    ws.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (typeof msg.server_time === "number") { offset = msg.server_time - Date.now() / 1000; }
      if (msg.kind === "view") {
        view = msg.view;
        render();
      } else if (msg.kind === "notice") {
        message(msg.text || msg.message || "", msg.level === "warn" ? "err" : "info");
      }
    };
    ws.onclose = function (event) {
      if (event.code === 4001) { location.href = "/panel/login"; return; }
      setConn("lost", "连接中断，正在重连 · reconnecting…");
      // A refused upgrade looks like any drop; ask the page whether we are still signed in.
      fetch("/panel", { credentials: "same-origin", redirect: "manual" }).then(function (r) {
        if (r.type === "opaqueredirect" || r.status === 303) { location.href = "/panel/login"; }
      }).catch(function () { /* server down: keep retrying */ });
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  setInterval(tick, 250);
  connect();
})();
