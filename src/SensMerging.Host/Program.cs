using SensMerging.Host.Cli;

return await CliApp.Create().Parse(args).InvokeAsync();
