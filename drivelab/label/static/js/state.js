// Shared state of the page: S (dataset, list, display settings) and E (the image being edited).
// `actions` lets modules call each other's entry points without import cycles; main.js fills it.

export const IGNORE = 255;
export const DIFF = 254; // overlay value marking "prediction differs from the mask"
export const PAGE = 240; // rows per /api/images page

export const S = {
  info: null, classes: [], palette: new Uint8Array(256 * 4), hidden: new Set(),
  opacity: 0.5, showMask: true, brightness: 100, contrast: 100, pixelated: true,
  list: [], total: 0, totalExact: true, sel: 0, view: "grid", user: "",
  protect: "all", locked: new Set(), // protect classes: all | unlabelled | locked (see editor.guard)
};

export const E = {
  name: null, w: 0, h: 0, mask: null, version: 0, img: null,
  layers: {}, // name -> {arr, canvas, ctx, data}
  pred: null, prev: null, viewing: null, predMode: "off", history: [],
  tool: "brush", prevTool: "brush", cls: 0, size: 8, undo: [], redo: [],
  // Every edit bumps editSeq; a save records the editSeq it sent, so edits made while it was in
  // flight stay unsaved after it returns.
  editSeq: 0, savedSeq: 0, dirty: false, saving: null, saveAgain: false,
  zoom: 1, panX: 0, panY: 0, poly: [], drag: null, stroke: null, mouse: null, region: null,
  pending: [], // closed polygons waiting for enter: [{verts, cls}]
  polyDirty: false, preview: null, cut: [], flash: null, holeFrom: 0, findings: [],
};

export const actions = {};
