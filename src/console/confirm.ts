// The confirmation every action waits for: a modal dialog (focus stays in it, Escape cancels)
// that asks for a reason, recorded with the action.
import { field, h } from "./dom.js";

/** The reason given, or undefined if the operator cancelled. */
export function confirmAction(question: string, confirmLabel: string, defaultReason: string): Promise<string | undefined> {
  const reason = h("input", { type: "text", name: "reason", value: defaultReason, maxlength: "1000" });
  const dialog = h(
    "dialog",
    { "aria-labelledby": "confirm-question" },
    h(
      "form",
      { method: "dialog" },
      h("p", { id: "confirm-question" }, question),
      field("Reason", reason),
      h(
        "div",
        { class: "buttons" },
        h("button", { value: "cancel", type: "submit" }, "Cancel"),
        h("button", { value: "confirm", type: "submit", class: "danger" }, confirmLabel),
      ),
    ),
  );
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "confirm" ? reason.value : undefined);
    });
    dialog.showModal();
  });
}
