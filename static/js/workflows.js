/* Workflow pages: the editor's formsets (add, remove, reorder, fields per step type, the
 * names a template may use) and the input form of the preview and run pages (form / raw
 * JSON modes, live JSON validation). Plain JavaScript, no build step; every page works
 * without it (positions and remove boxes, server-side checks). */
(function () {
  "use strict";

  function $(root, selector) { return root.querySelector(selector); }
  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  /* ---------------------------------------------------------------- editor --- */

  function items(formset) {
    return $all($(formset, "[data-items]"), ":scope > [data-item]");
  }
  function liveItems(formset) {
    return items(formset).filter(function (item) { return item.dataset.deleted !== "true"; });
  }
  function field(item, name) { return item.querySelector('[name$="-' + name + '"]'); }

  function renumber(formset) {
    liveItems(formset).forEach(function (item, index) {
      var order = field(item, "ORDER");
      if (order) order.value = String(index + 1);
      var label = $(item, "[data-position]");
      if (label) label.textContent = String(index + 1);
    });
    var note = $(formset, "[data-empty-note]");
    if (note) note.hidden = liveItems(formset).length > 0;
  }

  function insertAtCursor(textarea, text) {
    var start = textarea.selectionStart || 0, end = textarea.selectionEnd || 0;
    var value = textarea.value;
    textarea.value = value.slice(0, start) + text + value.slice(end);
    textarea.focus();
    textarea.selectionStart = textarea.selectionEnd = start + text.length;
    textarea.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function refButton(text, insert) {
    var li = document.createElement("li");
    var button = document.createElement("button");
    button.type = "button"; button.className = "ref"; button.textContent = text;
    button.setAttribute("data-insert", insert);
    li.appendChild(button);
    return li;
  }

  function emptyNote(text) {
    var li = document.createElement("li"); li.className = "muted"; li.textContent = text; return li;
  }

  function refreshStep(step) {
    var type = (field(step, "type") || {}).value || "PROMPT";
    $all(step, "[data-types]").forEach(function (part) {
      part.hidden = part.getAttribute("data-types").split(" ").indexOf(type) === -1;
    });
    var onError = (field(step, "on_error") || {}).value || "fail";
    $all(step, "[data-when-on-error]").forEach(function (part) {
      part.hidden = part.getAttribute("data-when-on-error") !== onError;
    });
    var title = $(step, "[data-step-title]");
    var name = (field(step, "name") || {}).value;
    if (title) title.textContent = name || "New step";
  }

  function refreshRefs(editor) {
    var variables = $(editor, '[data-formset="variables"]');
    var steps = $(editor, '[data-formset="steps"]');
    if (!steps) return;
    var variableNames = variables ? liveItems(variables).map(function (item) {
      return (field(item, "name") || {}).value;
    }).filter(Boolean) : [];
    var earlier = [];
    liveItems(steps).forEach(function (step) {
      refreshStep(step);
      var type = (field(step, "type") || {}).value;
      // CONDITION's expression and MAP's items take bare names; templates take {{ }}.
      var bare = type === "CONDITION" || type === "MAP";
      var wrap = bare ? function (x) { return x; } : function (x) { return "{{ " + x + " }}"; };
      var varList = $(step, '[data-refs="variables"]'), stepList = $(step, '[data-refs="steps"]');
      if (varList) {
        varList.innerHTML = "";
        variableNames.forEach(function (name) { varList.appendChild(refButton("input." + name, wrap("input." + name))); });
        if (!variableNames.length) varList.appendChild(emptyNote("none"));
      }
      if (stepList) {
        stepList.innerHTML = "";
        earlier.forEach(function (name) { stepList.appendChild(refButton("steps." + name + ".output", wrap("steps." + name + ".output"))); });
        if (!earlier.length) stepList.appendChild(emptyNote("none (this is the first step)"));
      }
      var name = (field(step, "name") || {}).value;
      if (name) earlier.push(name);
    });
  }

  function addItem(formset) {
    var total = $(formset, 'input[name$="-TOTAL_FORMS"]');
    var template = $(formset, "template[data-empty-form]");
    var index = parseInt(total.value, 10);
    var html = template.innerHTML.replace(/__prefix__/g, String(index));
    var holder = document.createElement("div");
    holder.innerHTML = html.trim();
    var item = holder.firstElementChild;
    $(formset, "[data-items]").appendChild(item);
    total.value = String(index + 1);
    renumber(formset);
    var first = item.querySelector("input:not([type=hidden]), select, textarea");
    if (first) first.focus();
    return item;
  }

  function removeItem(formset, item) {
    var box = field(item, "DELETE");
    if (box) box.checked = true;
    item.dataset.deleted = "true";
    item.hidden = true;
    renumber(formset);
    var add = $(formset, "[data-add]");
    if (add) add.focus();
  }

  function moveItem(formset, item, direction) {
    var live = liveItems(formset);
    var index = live.indexOf(item);
    var other = live[direction === "up" ? index - 1 : index + 1];
    if (!other) return;
    if (direction === "up") other.parentNode.insertBefore(item, other);
    else other.parentNode.insertBefore(other, item);
    renumber(formset);
    var button = item.querySelector('[data-move="' + direction + '"]');
    if (button) button.focus();
  }

  function initEditor(editor) {
    editor.classList.add("js");
    $all(editor, "[data-formset]").forEach(renumber);
    refreshRefs(editor);
    editor.addEventListener("click", function (event) {
      var formset = event.target.closest("[data-formset]");
      var item = event.target.closest("[data-item]");
      if (event.target.closest("[data-add]") && formset) {
        addItem(formset); refreshRefs(editor);
      } else if (event.target.closest("[data-remove]") && item) {
        removeItem(formset, item); refreshRefs(editor);
      } else if (event.target.closest("[data-move]") && item) {
        moveItem(formset, item, event.target.closest("[data-move]").getAttribute("data-move")); refreshRefs(editor);
      } else if (event.target.closest("[data-insert]") && item) {
        var button = event.target.closest("[data-insert]");
        var type = (field(item, "type") || {}).value;
        var into = button.getAttribute("data-target") ||
          ({ CONDITION: "expression", MAP: "map_items" })[type] || "template";
        var target = field(item, into);
        if (target) insertAtCursor(target, button.getAttribute("data-insert"));
      }
    });
    editor.addEventListener("input", function (event) {
      if (event.target.matches('[data-role="variable-name"], [data-role="step-name"]')) refreshRefs(editor);
    });
    editor.addEventListener("change", function (event) {
      if (event.target.matches("select")) refreshRefs(editor);
    });
  }

  /* ----------------------------------------------------- preview and run input --- */

  // Where a JSON.parse error is, as "line L, column C" (browsers word it differently).
  function jsonErrorAt(text, error) {
    var message = String(error && error.message || error);
    var lineCol = /line (\d+) column (\d+)/.exec(message);
    if (lineCol) return { line: +lineCol[1], column: +lineCol[2], message: message };
    var position = /position (\d+)/.exec(message);
    var at = position ? +position[1] : text.length;
    var before = text.slice(0, at).split("\n");
    return { line: before.length, column: before[before.length - 1].length + 1, message: message };
  }

  function checkJson(text) {
    if (!text.trim()) return { ok: true, value: {} };
    var value;
    try { value = JSON.parse(text); } catch (error) {
      var where = jsonErrorAt(text, error);
      var reason = where.message.replace(/^JSON\.parse: /, "").replace(/ \(line \d+ column \d+\)$/, "")
        .replace(/ in JSON at position \d+.*$/, "");
      return { ok: false, text: "Invalid JSON at line " + where.line + ", column " + where.column + ": " + reason + "." };
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { ok: false, text: 'The input must be a JSON object, such as {"name": "value"}.' };
    }
    return { ok: true, value: value };
  }

  function inputMode(form) {
    var checked = form.querySelector('[data-role="mode"]:checked');
    return checked ? checked.value : "form";
  }

  function fieldsAsObject(form) {
    var value = {};
    $all(form, "[data-var]").forEach(function (input) {
      var text = input.value;
      if (text === "") return;
      var type = input.getAttribute("data-type");
      if (type === "STRING") { value[input.getAttribute("data-var")] = text; return; }
      try { value[input.getAttribute("data-var")] = JSON.parse(text); } catch (e) { value[input.getAttribute("data-var")] = text; }
    });
    return value;
  }

  function objectToFields(form, value) {
    $all(form, "[data-var]").forEach(function (input) {
      var name = input.getAttribute("data-var");
      if (!(name in value)) { input.value = ""; return; }
      var v = value[name];
      input.value = typeof v === "string" && input.getAttribute("data-type") === "STRING" ? v : JSON.stringify(v);
    });
  }

  function validateInput(form) {
    var status = $(form, "[data-json-status]");
    var textarea = $(form, '[data-role="input-json"]');
    var runs = $all(form, "[data-run]");
    var ok = true;
    if (inputMode(form) === "json" && textarea) {
      var result = checkJson(textarea.value);
      ok = result.ok;
      if (status) {
        status.textContent = ok ? "Valid JSON." : result.text;
        status.className = "json-status " + (ok ? "ok" : "bad");
      }
      textarea.setAttribute("aria-invalid", ok ? "false" : "true");
    }
    runs.forEach(function (button) { button.disabled = !ok; });
    form.dataset.inputValid = ok ? "true" : "false";
    return ok;
  }

  function showMode(form) {
    var mode = inputMode(form);
    $all(form, "[data-mode-panel]").forEach(function (panel) {
      panel.hidden = panel.getAttribute("data-mode-panel") !== mode;
    });
    validateInput(form);
  }

  function initInputForm(form) {
    form.classList.add("js");
    showMode(form);
    form.addEventListener("change", function (event) {
      if (!event.target.matches('[data-role="mode"]')) return;
      var textarea = $(form, '[data-role="input-json"]');
      if (event.target.value === "json" && textarea) {
        textarea.value = JSON.stringify(fieldsAsObject(form), null, 2);
      } else if (textarea) {
        var parsed = checkJson(textarea.value);
        if (parsed.ok) objectToFields(form, parsed.value);
      }
      showMode(form);
    });
    form.addEventListener("input", function (event) {
      if (event.target.matches('[data-role="input-json"]')) validateInput(form);
    });
    // Never send JSON the guard refused (Enter in a field, a script calling submit).
    form.addEventListener("submit", function (event) {
      if (!validateInput(form)) { event.preventDefault(); event.stopImmediatePropagation(); }
    }, true);
    form.addEventListener("htmx:beforeRequest", function (event) {
      if (!validateInput(form)) event.preventDefault();
    });
    form.addEventListener("htmx:afterRequest", function () {
      // htmx re-enables the Run button after a request: the guard has the last word.
      setTimeout(function () { validateInput(form); }, 0);
    });
  }

  function init() {
    $all(document, "[data-editor]").forEach(initEditor);
    $all(document, "[data-input-form]").forEach(initInputForm);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
