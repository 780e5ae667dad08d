// The experiment e2e: starts stacks and runs the quick experiment (one file, several minutes).
module.exports = { ...require('../jest.preset.cjs').e2e(__dirname), testTimeout: 420_000 };
