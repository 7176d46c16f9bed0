// The part of istanbul-lib-instrument's API the fuzz engine uses (the package ships no types).
declare module 'istanbul-lib-instrument' {
  interface InstrumenterOptions {
    coverageVariable?: string;
    compact?: boolean;
    esModules?: boolean;
    produceSourceMap?: boolean;
  }
  interface Instrumenter {
    instrumentSync(code: string, filename: string): string;
  }
  const lib: { createInstrumenter(options?: InstrumenterOptions): Instrumenter };
  export default lib;
}
