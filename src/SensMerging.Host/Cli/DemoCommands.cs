using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SensMerging.Host.Demo;
using SensMerging.Registry;
using SensMerging.Zoo;
using Spectre.Console;

namespace SensMerging.Host.Cli;

/// <summary><c>sensmerge zoo build</c>, <c>sensmerge eval</c> and <c>sensmerge demo</c>.</summary>
public static class DemoCommands
{
    public const string DefaultRoot = "zoo";

    public static Command Zoo()
    {
        var output = new Option<DirectoryInfo>("--out", "-o") { Description = "Where to write the zoo", DefaultValueFactory = _ => new DirectoryInfo(Path.Combine(DefaultRoot, "seed-1")) };
        var seed = new Option<int>("--seed") { Description = "Seed (data, initialisation, training order)", DefaultValueFactory = _ => 1 };
        var size = new Option<string>("--size") { Description = "default (minutes) or tiny (seconds)", DefaultValueFactory = _ => "default" };
        size.AcceptOnlyFromAmong("default", "tiny");
        var settings = new Option<FileInfo?>("--settings") { Description = "Zoo settings as JSON (the 'settings' object of a zoo.json); overrides --size" };
        var build = new Command("build", "Train a small Llama-layout base on three task families and one expert per family (reused when present; when only the experts' settings changed, the base is kept and only the experts are trained again)") { output, seed, size, settings };
        build.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var logger = services.GetRequiredService<ILogger<ZooBuilder>>();
            var result = await new ZooBuilder(logger).BuildAsync(parse.GetValue(output)!.FullName, parse.GetValue(seed), ZooSettingsFrom(parse.GetValue(settings), parse.GetValue(size)!), null, token);
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"zoo {(result.Reused ? "reused" : "built")} in {result.Layout.Root}: base + {string.Join(", ", result.Experts)} ({result.Manifest.TotalSeconds:F0} s training); repos in {result.Layout.ReposRoot}"));
            return 0;
        }, ct));
        return new Command("zoo", "The project's own small trained experts") { build };
    }

    private static ZooSettings ZooSettingsFrom(FileInfo? file, string size) =>
        file is null ? ZooSettings.For(ZooSettings.ParseSize(size)) : ZooSettings.Load(file.FullName);

    public static Command Eval()
    {
        var model = new Argument<string>("model") { Description = "Model folder (a merged output or a zoo model)" };
        var task = new Option<string[]>("--task", "-t") { Description = "Zoo task(s): math, code, knowledge (default: all)", AllowMultipleArgumentsPerToken = true };
        var zoo = new Option<DirectoryInfo>("--zoo") { Description = "Zoo whose held-out sets are used", DefaultValueFactory = _ => new DirectoryInfo(Path.Combine(DefaultRoot, "seed-1")) };
        var samples = new Option<int>("--samples") { Description = "Evaluation samples per task", DefaultValueFactory = _ => 200 };
        var command = new Command("eval", "Exact match and perplexity of a model on zoo tasks; recorded in the registry when the model is a recorded merge's output") { model, task, zoo, samples };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var layout = new ZooLayout(parse.GetValue(zoo)!.FullName);
            var manifest = await ZooManifest.TryLoadAsync(layout.ManifestPath, token)
                ?? throw new FileNotFoundException($"no zoo at {layout.Root} (run 'sensmerge zoo build --out {layout.Root}')");
            var known = manifest.Tasks.Select(t => t.Name).ToList();
            var tasks = parse.GetValue(task) is { Length: > 0 } asked ? asked : [.. known];
            foreach (var t in tasks.Where(t => !known.Contains(t)))
            {
                throw new ArgumentException($"unknown task '{t}': the zoo has {string.Join(", ", known)}");
            }
            var path = Path.GetFullPath(parse.GetValue(model)!);
            if (!File.Exists(Path.Combine(path, "config.json")))
            {
                throw new DirectoryNotFoundException($"{path} is not a model folder (no config.json)");
            }
            var n = parse.GetValue(samples);
            var grid = await ZooDatasets.EvaluationGridAsync(layout, [(path, path)], tasks, n, manifest.Settings.MaxLength, token);
            var device = services.GetRequiredService<IOptions<SensMergeOptions>>().Value.Device;
            var scores = (await services.GetRequiredService<ModelEvaluator>().EvaluateAsync(grid, device, n, token)).Single();
            var table = new Table().AddColumns("task", "exact match (%)", "perplexity");
            foreach (var t in tasks)
            {
                table.AddRow(t, (100 * scores.ExactMatch[t]).ToString("F1", CultureInfo.InvariantCulture), scores.Perplexity[t].ToString("F3", CultureInfo.InvariantCulture));
            }
            AnsiConsole.Write(table);
            var registry = services.GetRequiredService<IMergeRegistry>();
            if ((await registry.ListAsync(new MergeQuery { Model = path, Limit = 1 }, token)).Count > 0)
            {
                string? id = null;
                foreach (var t in tasks)
                {
                    id = await registry.AddEvaluationAsync(path, new EvaluationResult(path, t, ModelEvaluator.ExactMatch, scores.ExactMatch[t], n, DateTime.UtcNow), token);
                    await registry.AddEvaluationAsync(path, new EvaluationResult(path, t, ModelEvaluator.Perplexity, scores.Perplexity[t], n, DateTime.UtcNow), token);
                }
                Console.Out.WriteLine($"recorded in registry merge {id}");
            }
            return 0;
        }, ct));
        return command;
    }

    public static Command Demo()
    {
        var root = new Option<DirectoryInfo>("--root") { Description = "Folder for zoos, merges and results", DefaultValueFactory = _ => new DirectoryInfo(DefaultRoot) };
        var seeds = new Option<int[]>("--seeds") { Description = "Seeds to run (each trains its own zoo); several give mean and spread", DefaultValueFactory = _ => [1], AllowMultipleArgumentsPerToken = true };
        var size = new Option<string>("--size") { Description = "default or tiny", DefaultValueFactory = _ => "default" };
        size.AcceptOnlyFromAmong("default", "tiny");
        var methods = new Option<string[]>("--methods") { Description = "Strategies to compare", DefaultValueFactory = _ => ["task_arithmetic", "ties", "dare_ties"], AllowMultipleArgumentsPerToken = true };
        var evalSamples = new Option<int>("--eval-samples") { Description = "Held-out samples per task", DefaultValueFactory = _ => 200 };
        var calibration = new Option<int>("--calibration-samples") { Description = "Calibration samples per expert (m)", DefaultValueFactory = _ => 100 };
        var alignment = new Option<string>("--alignment") { Description = "sens reading of logit alignment: alignment or distance", DefaultValueFactory = _ => DemoOptions.DefaultAlignment };
        alignment.AcceptOnlyFromAmong("alignment", "distance");
        var temperature = new Option<double>("--temperature") { Description = "sens temperature T", DefaultValueFactory = _ => DemoOptions.DefaultTemperature };
        var temperatureScale = new Option<string>("--temperature-scale")
        {
            Description = "sens temperature scale: absolute (as published) or spread (T in units of alpha*tau's spread over experts per layer group)",
            DefaultValueFactory = _ => DemoOptions.DefaultTemperatureScale,
        };
        temperatureScale.AcceptOnlyFromAmong("absolute", "spread");
        var density = new Option<double>("--density") { Description = "Density of ties / dare_ties (share of each task vector kept)", DefaultValueFactory = _ => DemoOptions.DefaultDensity };
        density.Validators.Add(r =>
        {
            if (r.GetValue(density) is not (> 0 and <= 1))
            {
                r.AddError("--density must be in (0, 1]");
            }
        });
        var lambda = new Option<double>("--lambda") { Description = "lambda of task_arithmetic / dare_linear (ties and dare_ties use 1)", DefaultValueFactory = _ => DemoOptions.DefaultLambda };
        lambda.Validators.Add(r =>
        {
            if (r.GetValue(lambda) is not (> 0 and <= 10))
            {
                r.AddError("--lambda must be in (0, 10]");
            }
        });
        var zooSettings = new Option<FileInfo?>("--zoo-settings") { Description = "Zoo settings as JSON (the 'settings' object of a zoo.json); overrides --size" };
        var variants = new Option<string[]>("--variants")
        {
            Description = "Variants of each method: plain, sens, sens-task, sens-cross (default: all)",
            DefaultValueFactory = _ => DemoRunner.Variants.Select(v => v.Label).ToArray(),
            AllowMultipleArgumentsPerToken = true,
        };
        variants.AcceptOnlyFromAmong([.. DemoRunner.Variants.Select(v => v.Label)]);
        var split = new Option<string>("--split") { Description = "Held-out set to score on: eval (reported numbers) or dev (for choosing settings)", DefaultValueFactory = _ => "eval" };
        split.AcceptOnlyFromAmong("eval", "dev");
        var command = new Command("demo", "The main job: zoo -> Hub server -> pull -> merge (with and without sens, ablations) -> evaluate -> registry -> table")
        {
            root, seeds, size, zooSettings, methods, variants, evalSamples, calibration, alignment, temperature, temperatureScale, density, lambda, split,
        };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var options = new DemoOptions
            {
                Root = parse.GetValue(root)!.FullName,
                Seeds = parse.GetValue(seeds)!,
                Zoo = ZooSettingsFrom(parse.GetValue(zooSettings), parse.GetValue(size)!),
                Methods = parse.GetValue(methods)!,
                Variants = parse.GetValue(variants)!,
                EvalSamples = parse.GetValue(evalSamples),
                CalibrationSamples = parse.GetValue(calibration),
                Alignment = parse.GetValue(alignment)!,
                Temperature = parse.GetValue(temperature),
                TemperatureScale = parse.GetValue(temperatureScale)!,
                Density = parse.GetValue(density),
                Lambda = parse.GetValue(lambda),
                Split = parse.GetValue(split) == "dev" ? HeldOutSplit.Dev : HeldOutSplit.Eval,
                Device = services.GetRequiredService<IOptions<SensMergeOptions>>().Value.Device,
            };
            var watch = System.Diagnostics.Stopwatch.StartNew();
            var rows = await services.GetRequiredService<DemoRunner>().RunAsync(options, token);
            var tasks = rows.First().PerSeed.First().ExactMatch.Keys.ToList();
            var table = new Table().Title("exact match (%) on the " + DemoReport.SetName(options.Split) + (options.Seeds.Count > 1 ? ", mean ± sd over seeds" : ""));
            foreach (var h in DemoReport.Header(tasks))
            {
                table.AddColumn(h);
            }
            foreach (var line in DemoReport.Body(tasks, rows))
            {
                table.AddRow(line.Select(Markup.Escape).ToArray());
            }
            AnsiConsole.Write(table);
            // Retention in a table of its own: beside the accuracy columns it would not fit a terminal's width.
            var retention = new Table().Title("retention: (merged - base) / (expert - base) on each expert's own task");
            foreach (var h in DemoReport.RetentionHeader(tasks).Prepend("method"))
            {
                retention.AddColumn(h);
            }
            foreach (var (row, cells) in rows.Zip(DemoReport.RetentionBody(tasks, rows)).Where(p => p.First.RecordIds.Count > 0))
            {
                retention.AddRow(cells.Prepend(row.Label).Select(Markup.Escape).ToArray());
            }
            AnsiConsole.Write(retention);
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"results: {Path.Combine(options.Root, "demo", "results.md")} (+ results.png, coefficients.png); {watch.Elapsed.TotalMinutes:F1} min"));
            return 0;
        }, ct));
        return command;
    }
}
