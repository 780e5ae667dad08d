// Types of the xk6-sse extension (github.com/phymbert/xk6-sse, module `k6/x/sse`): @types/k6 does
// not cover extensions. Only what the scripts here use.
declare module 'k6/x/sse' {
  export interface SseParams {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    tags?: Record<string, string>;
  }
  export interface SseEvent {
    id: string;
    name: string;
    data: string;
  }
  export interface SseError {
    error(): string;
  }
  export interface SseClient {
    on(event: 'open', callback: () => void): void;
    on(event: 'event', callback: (event: SseEvent) => void): void;
    on(event: 'error', callback: (error: SseError) => void): void;
    close(): void;
  }
  export interface SseResponse {
    status: number;
    headers: Record<string, string>;
    body: string | null;
    error: string;
  }
  const sse: {
    open(url: string, params: SseParams | null, setup: (client: SseClient) => void): SseResponse;
  };
  export default sse;
}
