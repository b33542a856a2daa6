// The Chorus demo page script (placeholder until the demo lands).
export {};
