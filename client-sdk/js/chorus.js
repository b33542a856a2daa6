// Chorus browser SDK (placeholder until it lands).
export {};
