// The request path's Redis deadline is the dam's adaptive one (libs/dam), learnt per connection.
export { AdaptiveDeadline } from '@traffic-dam/dam';
