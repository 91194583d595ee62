/** The markers of a response's reasoning block (OPERA.md): `<think>` reasoning `</think>` answer. */
export const THINK_OPEN = '<think>';
export const THINK_CLOSE = '</think>';
