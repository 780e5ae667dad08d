module.exports = require('../../jest.preset.cjs').e2e(__dirname);
