using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Host.Merging;
using SensMerging.Registry;


namespace SensMerging.Host.Cli;

/// <summary><c>sensmerge registry list|show|lineage|diff|export|reproduce|plot</c>.</summary>
public static class RegistryCommand
{
    public static Command Create()
    {
        var registry = new Command("registry", "Query the merge history: provenance, parameters, scores and coefficients");
        registry.Add(List());
        registry.Add(Show());
        registry.Add(Lineage());
        registry.Add(Diff());
        registry.Add(Export());
        registry.Add(Reproduce());
        registry.Add(Plot());
        return registry;
    }

    private static Option<bool> JsonOption() => new("--json") { Description = "Print JSON (schema in docs/registry.md)" };

    private static Command List()
    {
        var model = new Option<string?>("--model") { Description = "Merges that used or produced this model (repo id, alias or folder)" };
        var strategy = new Option<string?>("--strategy") { Description = "Strategy name, e.g. ties" };
        var decorator = new Option<string?>("--decorator") { Description = "Decorator name in the chain, e.g. sens" };
        var search = new Option<string?>("--search") { Description = "Text in the id, method, an input, a tag or the output (case-insensitive)" };
        var since = new Option<DateTime?>("--since") { Description = "Only merges created at or after this date/time (UTC)" };
        var until = new Option<DateTime?>("--until") { Description = "Only merges created before this date/time (UTC)" };
        var status = new Option<MergeStatus?>("--status") { Description = "running, succeeded, failed or cancelled" };
        var sort = new Option<MergeSort>("--sort") { Description = "newest, oldest or score (highest first; see --score)", DefaultValueFactory = _ => MergeSort.Newest };
        var score = new Option<string?>("--score") { Description = "With --sort score: the evaluation task/metric to sort by (default: each merge's first score)" };
        var offset = new Option<int>("--offset") { Description = "Skip this many matches first (pages)", DefaultValueFactory = _ => 0 };
        var limit = new Option<int>("--limit") { Description = "Most merges to list (0: all)", DefaultValueFactory = _ => 50 };
        var json = JsonOption();
        var command = new Command("list", "Merges, newest first") { model, strategy, decorator, search, since, until, status, sort, score, offset, limit, json };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var query = new MergeQuery
            {
                Model = parse.GetValue(model),
                Strategy = parse.GetValue(strategy),
                Decorator = parse.GetValue(decorator),
                Search = parse.GetValue(search),
                Since = parse.GetValue(since) is { } s ? DateTime.SpecifyKind(s, DateTimeKind.Utc) : null,
                Until = parse.GetValue(until) is { } u ? DateTime.SpecifyKind(u, DateTimeKind.Utc) : null,
                Status = parse.GetValue(status),
                Sort = parse.GetValue(sort),
                ScoreKey = parse.GetValue(score),
                Offset = parse.GetValue(offset),
                Limit = parse.GetValue(limit),
            };
            var merges = await services.GetRequiredService<IMergeRegistry>().ListAsync(query, token);
            Console.Out.WriteLine(parse.GetValue(json) ? RegistryJson.Serialize(merges) : RegistryText.List(merges));
            return 0;
        }, ct));
        return command;
    }

    private static Command Show()
    {
        var id = new Argument<string>("id") { Description = "Merge id or a unique prefix" };
        var json = JsonOption();
        var command = new Command("show", "One merge in full") { id, json };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var record = await Get(services, parse.GetValue(id)!, token);
            Console.Out.WriteLine(parse.GetValue(json) ? RegistryJson.Serialize(record) : RegistryText.Show(record));
            return 0;
        }, ct));
        return command;
    }

    private static Command Lineage()
    {
        var model = new Argument<string>("model") { Description = "Model reference: repo id, alias or output folder" };
        var json = JsonOption();
        var command = new Command("lineage", "Merges that used a model, and the merge that produced it") { model, json };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var lineage = await services.GetRequiredService<IMergeRegistry>().LineageAsync(parse.GetValue(model)!, token);
            Console.Out.WriteLine(parse.GetValue(json) ? RegistryJson.Serialize(lineage) : RegistryText.Lineage(lineage));
            return 0;
        }, ct));
        return command;
    }

    private static Command Diff()
    {
        var left = new Argument<string>("left") { Description = "First merge id" };
        var right = new Argument<string>("right") { Description = "Second merge id" };
        var json = JsonOption();
        var command = new Command("diff", "Parameters, inputs and coefficients that differ between two merges") { left, right, json };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var diff = MergeDiff.Compare(await Get(services, parse.GetValue(left)!, token), await Get(services, parse.GetValue(right)!, token));
            Console.Out.WriteLine(parse.GetValue(json) ? RegistryJson.Serialize(diff) : diff.ToText());
            return 0;
        }, ct));
        return command;
    }

    private static Command Export()
    {
        var id = new Argument<string>("id") { Description = "Merge id or a unique prefix" };
        var output = new Option<FileInfo?>("--out", "-o") { Description = "Write to a file instead of stdout" };
        var command = new Command("export", "One merge as a JSON document (schema in docs/registry.md)") { id, output };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var json = await services.GetRequiredService<IMergeRegistry>().ExportAsync(parse.GetValue(id)!, token);
            if (parse.GetValue(output) is { } file)
            {
                await File.WriteAllTextAsync(file.FullName, json, token);
            }
            else
            {
                Console.Out.WriteLine(json);
            }
            return 0;
        }, ct));
        return command;
    }

    private static Command Reproduce()
    {
        var id = new Argument<string>("id") { Description = "Merge id or a unique prefix" };
        var output = new Option<DirectoryInfo?>("--out", "-o") { Description = "Where to write the new output (default: beside the original, suffixed)" };
        var command = new Command("reproduce", "Re-run a merge with its pinned revisions and seed, and compare output hashes") { id, output };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var registry = services.GetRequiredService<IMergeRegistry>();
            var original = await Get(services, parse.GetValue(id)!, token);
            var plan = ReproductionPlan.From(original);
            Console.Error.Write(plan.ToText());
            var configDir = original.ConfigPath is { } p && Directory.Exists(Path.GetDirectoryName(p)) ? Path.GetDirectoryName(p)! : Path.GetTempPath();
            var configPath = Path.Combine(configDir, $".sensmerge-reproduce-{original.Id}-{Guid.NewGuid():N}.yaml");
            await File.WriteAllTextAsync(configPath, plan.PinnedConfigText, token);
            try
            {
                var outDir = parse.GetValue(output)?.FullName
                    ?? (original.Outputs?.Folder is { } folder ? folder + ".reproduce-" + DateTime.UtcNow.ToString("yyyyMMddHHmmss", CultureInfo.InvariantCulture) : throw new InvalidOperationException("the original merge has no output folder; pass --out"));
                var outcome = await services.GetRequiredService<MergePipeline>().RunAsync(new MergeRunRequest
                {
                    ConfigPath = configPath,
                    OutputPath = outDir,
                    Seed = plan.Seed,
                    OutputDType = plan.OutDtype,
                    ComputeInFloat32 = plan.ComputeDtype == MergeRunRequest.Float32Compute,
                    Tags = [$"reproduces:{original.Id}"],
                }, null, token);
                var reproduced = await registry.GetAsync(outcome.RecordId, token) ?? throw new InvalidOperationException($"record {outcome.RecordId} vanished");
                // The model card names the registry record, so it differs by design; every other file must match.
                var comparison = OutputComparison.Compare(original, reproduced, OutputComparison.ProvenanceFiles);
                Console.Out.WriteLine(comparison.ToText());
                Console.Out.WriteLine(comparison.Identical
                    ? $"identical: {reproduced.Id} reproduces {original.Id} byte for byte ({comparison.FilesCompared} files; the model card README.md names its own record and is not compared)"
                    : $"different: {reproduced.Id} does not reproduce {original.Id}");
                return comparison.Identical ? 0 : 3;
            }
            finally
            {
                File.Delete(configPath);
            }
        }, ct));
        return command;
    }

    private static Command Plot()
    {
        var id = new Argument<string>("id") { Description = "Merge id or a unique prefix" };
        var output = new Option<FileInfo?>("--out", "-o") { Description = "PNG file (default: coefficients-<id>.png)" };
        var command = new Command("plot", "PNG of the Sens coefficients per layer group and expert") { id, output };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var record = await Get(services, parse.GetValue(id)!, token);
            var file = parse.GetValue(output)?.FullName ?? Path.GetFullPath($"coefficients-{record.Id}.png");
            CoefficientPlot.Write(record, file);
            Console.Out.WriteLine(file);
            return 0;
        }, ct));
        return command;
    }

    private static async Task<MergeRecord> Get(IServiceProvider services, string id, CancellationToken token) =>
        await services.GetRequiredService<IMergeRegistry>().GetAsync(id, token)
            ?? throw new KeyNotFoundException($"no merge with id '{id}' in the registry");
}
