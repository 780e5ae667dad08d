import { Controller, Get } from '@nestjs/common';
import { DamService } from './dam.service';

@Controller('dam')
export class DamController {
  constructor(private readonly dam: DamService) {}

  /** This instance and the cluster as the budget sees them. */
  @Get()
  async status(): ReturnType<DamService['status']> {
    return this.dam.status();
  }
}
