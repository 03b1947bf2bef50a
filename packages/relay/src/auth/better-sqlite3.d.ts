// The subset of better-sqlite3's API this package uses (no @types package installed).
declare module 'better-sqlite3' {
  namespace Database {
    interface RunResult {
      changes: number;
      lastInsertRowid: number | bigint;
    }
    interface Statement<P extends unknown[] = unknown[], R = unknown> {
      run(...params: P): RunResult;
      get(...params: P): R | undefined;
      all(...params: P): R[];
    }
    interface Database {
      pragma(source: string, options?: { simple?: boolean }): unknown;
      exec(source: string): this;
      prepare<P extends unknown[] = unknown[], R = unknown>(source: string): Statement<P, R>;
      transaction<T extends (...args: never[]) => unknown>(fn: T): T;
      close(): this;
    }
  }
  const Database: new (filename: string, options?: { readonly?: boolean; fileMustExist?: boolean; timeout?: number }) => Database.Database;
  export default Database;
}
