// @ts-check
/** @file DOM helpers: look-ups that check what they find, building elements, cloning templates. */

/**
 * The first element under `root` that matches `selector`, which must be a `type`.
 * A missing element is a bug in the page, so it throws rather than returning null.
 * @template {Element} T
 * @param {{ new (): T, prototype: T }} type e.g. HTMLInputElement
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {T}
 */
export function one(type, selector, root = document) {
  const node = root.querySelector(selector);
  if (!(node instanceof type)) throw new Error(`no ${type.name} matches ${selector}`);
  return node;
}

/**
 * The HTML element matching `selector` (throws when there is none).
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement}
 */
export function $(selector, root = document) {
  return one(HTMLElement, selector, root);
}

/**
 * The HTML element matching `selector`, or null: for views that may have been left meanwhile.
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement | null}
 */
export function find(selector, root = document) {
  const node = root.querySelector(selector);
  return node instanceof HTMLElement ? node : null;
}

/**
 * Every HTML element matching `selector`, in document order.
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement[]}
 */
export function $$(selector, root = document) {
  return Array.from(root.querySelectorAll(selector)).filter((node) => node instanceof HTMLElement);
}

/**
 * Attributes for `el`: `class`, `text` (the text content), `on<event>` listeners, and plain
 * attributes (`true` → present and empty; `null`, `undefined` and `false` → left out).
 * @typedef {Record<string, string | boolean | null | undefined | ((event: Event) => void)>} Attrs
 */

/** @typedef {Node | string | null | undefined} Child */

/**
 * A new element with attributes and children (null and undefined children are skipped).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Attrs} [attrs]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") {
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = String(value);
    } else if (key === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(key, value === true ? "" : value);
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/**
 * A fresh copy of the `<template id=…>` in index.html.
 * @param {string} id
 * @returns {DocumentFragment}
 */
export function fromTemplate(id) {
  const template = document.getElementById(id);
  if (!(template instanceof HTMLTemplateElement)) throw new Error(`no template #${id}`);
  return /** @type {DocumentFragment} */ (template.content.cloneNode(true));
}
