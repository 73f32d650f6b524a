/** Text helpers for the HTML report: escaping, visible whitespace, JSON safe inside <script>. */

const HTML_ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

const VISIBLE: Record<string, string> = {
  " ": "␣",
  "\n": "↵",
  "\t": "⇥",
  "\r": "␍",
  "\u007f": "␡",
};

/**
 * A token's text with whitespace and control characters made visible: space ␣, newline ↵, tab ⇥,
 * carriage return ␍, other C0 controls as their Unicode control pictures (U+2400 + code), and
 * invisible or unusual spaces (no-break space, zero-width space, BOM, line separator, ...) as
 * ⟨U+XXXX⟩. Bytes that are not valid UTF-8 are already U+FFFD (�) in the token text. The empty
 * token shows as ∅.
 */
export function visibleToken(text: string): string {
  if (text === "") return "∅";
  return text.replace(/[\u0000-\u0020\u007f\u0085\u00a0\u00ad\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u3000\ufeff]/g, (c) => {
    const visible = VISIBLE[c];
    if (visible) return visible;
    const code = c.charCodeAt(0);
    if (code < 0x20) return String.fromCharCode(0x2400 + code);
    return `⟨U+${code.toString(16).toUpperCase().padStart(4, "0")}⟩`;
  });
}

/**
 * JSON that can sit inside <script type="application/json">: `<`, `>` and `&` are written as
 * \u escapes (so no "</script>" or "<!--" can appear), as are U+2028 and U+2029.
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
