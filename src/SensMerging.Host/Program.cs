using SensMerging.Host.Cli;

return await CliApp.InvokeAsync(args);
