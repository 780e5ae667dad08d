import { Controller, Get } from '@nestjs/common';
import { AiStatus, type AiStatusView } from '../ai/ai-status';
import { DamService } from './dam.service';

@Controller('dam')
export class DamController {
  constructor(
    private readonly dam: DamService,
    private readonly ai: AiStatus,
  ) {}

  /** This instance and the cluster as the budget sees them, and the AI path behind them. */
  @Get()
  async status(): Promise<Awaited<ReturnType<DamService['status']>> & { ai: AiStatusView }> {
    const [dam, ai] = await Promise.all([this.dam.status(), this.ai.status()]);
    return { ...dam, ai };
  }
}
