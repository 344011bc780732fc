// Building DOM nodes. Text is only ever set as text (never as HTML), so nothing the server
// returns can become markup or script.
type Child = Node | string | null | undefined | false;
type Attribute = string | boolean | undefined | ((event: Event) => void);

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Record<string, Attribute> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (value === true) element.setAttribute(key, "");
    else if (typeof value === "string") element.setAttribute(key, value);
  }
  element.append(...children.filter((child): child is Node | string => child !== null && child !== undefined && child !== false));
  return element;
}

/** A labelled form control: the label names it for assistive technology and for tests. */
export function field(label: string, control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement): HTMLElement {
  control.id ||= `field-${label.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control);
}

/** A select of `choices` ([value, text]) with `selected` chosen. */
export function select(name: string, choices: readonly (readonly [string, string])[], selected: string): HTMLSelectElement {
  return h("select", { name }, ...choices.map(([value, text]) => h("option", { value, selected: value === selected }, text)));
}

/** A status line that assistive technology reads out when it changes. */
export function liveStatus(text = ""): HTMLElement {
  return h("p", { class: "status", role: "status", "aria-live": "polite" }, text);
}
