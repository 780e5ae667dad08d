import { Inject, Injectable } from '@nestjs/common';
import type { DamMode } from '@traffic-dam/dam';
import { GATEWAY_CONFIG, type GatewayConfig } from './config/config';

/**
 * What DAM_MODE means, in one place. `enforce`: every layer refuses what does not fit. `shadow`:
 * the dam's own layers (slots, per-user limits) count and log what they would refuse and let it
 * through; the AI gate and the breaker still protect the worker. `off`: the "before" server of
 * the experiment, with no flow control at all.
 */
@Injectable()
export class DamModePolicy {
  readonly mode: DamMode;

  constructor(@Inject(GATEWAY_CONFIG) config: GatewayConfig) {
    this.mode = config.DAM_MODE;
  }

  /** False only for `off`: no slots, no per-user limits, no AI gate, no breaker. */
  get flowControl(): boolean {
    return this.mode !== 'off';
  }

  /** Whether a refusal of the dam's own layers (slots, per-user limits) is only counted. */
  get shadow(): boolean {
    return this.mode === 'shadow';
  }
}
