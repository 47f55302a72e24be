using System.CommandLine;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Registry;
using SensMerging.Host.Merging;


namespace SensMerging.Host.Cli;

/// <summary><c>sensmerge scores CONFIG.yaml [--json]</c>: runs only the decorators' scorers and prints their tables.</summary>
public static class ScoresCommand
{
    public static Command Create()
    {
        var config = new Argument<FileInfo>("config") { Description = "Merge config with a decorator (e.g. sens) and calibration data" };
        var json = new Option<bool>("--json") { Description = "Print every table as JSON" };
        var device = new Option<string?>("--device") { Description = "cpu or cuda" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var maxMemory = CliApp.MaxMemoryOption();
        var command = new Command("scores", "Run the scorers only: alpha, tau and the coefficients (layer groups by experts)") { config, json, device, maxMemory };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var file = parse.GetValue(config)!;
            if (!file.Exists)
            {
                throw new FileNotFoundException($"merge config {file.FullName} does not exist");
            }
            var prepared = await services.GetRequiredService<MergePipeline>().ScoreAsync(
                file.FullName, CliApp.ScoringDevice(parse, device, maxMemory, services), token);
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(prepared.Reports, JsonOutput.Options));
                return 0;
            }
            foreach (var report in prepared.Reports)
            {
                Console.Out.WriteLine($"decorator {report.Decorator}: " + string.Join(", ", report.Settings.Select(kv => $"{kv.Key}={kv.Value}")));
                foreach (var table in report.Tables)
                {
                    Console.Out.WriteLine();
                    Console.Out.WriteLine($"{table.Scorer} ({table.Kind})");
                    // Coefficient-like tables are shown as the issue asks: layer groups (rows) by experts (columns).
                    Console.Out.WriteLine(table.Columns.Count > table.Rows.Count && table.Kind == SensMerging.Abstractions.ScorerKind.TaskSpecific
                        ? RegistryText.Transposed(table.Rows, table.Columns, table.Values)
                        : RegistryText.ScoreTable(table.Rows, table.Columns, table.Values));
                }
            }
            return 0;
        }, ct));
        return command;
    }
}
