using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Hub.Client;
using Spectre.Console;

namespace SensMerging.Host.Cli;

/// <summary><c>sensmerge hub pull ORG/NAME[@REV]</c> and <c>sensmerge hub ls</c>.</summary>
public static class HubCommand
{
    public static Command Create() => new("hub", "Pull models from a Hugging Face Hub (HF_ENDPOINT) into the shared cache, and list the cache") { Pull(), Ls() };

    private static Command Pull()
    {
        var repo = new Argument<string>("repo") { Description = "org/name, optionally @revision (branch, tag or commit)" };
        var include = new Option<string[]>("--include") { Description = "Only files matching this glob (repeatable)" };
        var exclude = new Option<string[]>("--exclude") { Description = "Skip files matching this glob (repeatable)" };
        var command = new Command("pull", "Download a repository revision into the cache (only what is missing), pinned to its commit") { repo, include, exclude };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var text = parse.GetValue(repo)!;
            var at = text.IndexOf('@', StringComparison.Ordinal);
            var (id, revision) = at > 0 ? (text[..at], text[(at + 1)..]) : (text, (string?)null);
            var cache = services.GetRequiredService<HubCache>();
            var snapshot = await PullWithProgressAsync(cache, id, revision, parse.GetValue(include), parse.GetValue(exclude), token);
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{snapshot.RepoId}@{snapshot.Revision} -> {snapshot.Commit}: {snapshot.Files.Count} files, {snapshot.TotalSize / 1e6:F1} MB ({snapshot.BytesDownloaded / 1e6:F1} MB downloaded)"));
            Console.Out.WriteLine(snapshot.SnapshotDirectory);
            return 0;
        }, ct));
        return command;
    }

    private static async Task<PulledSnapshot> PullWithProgressAsync(HubCache cache, string repo, string? revision, string[]? include, string[]? exclude, CancellationToken token)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive || Console.IsErrorRedirected)
        {
            return await cache.PullAsync(repo, revision, include, exclude, null, token);
        }
        PulledSnapshot result = null!;
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .StartAsync(async ctx =>
            {
                var overall = ctx.AddTask("[bold]overall[/]", maxValue: 1);
                var files = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                var progress = new Progress<HubPullProgress>(p =>
                {
                    overall.MaxValue = Math.Max(1, p.OverallTotal);
                    overall.Value = p.OverallBytes;
                    if (!files.TryGetValue(p.Path, out var task))
                    {
                        task = files[p.Path] = ctx.AddTask(Markup.Escape(p.Path), maxValue: Math.Max(1, p.FileTotal));
                    }
                    task.Value = p.State is HubPullFileState.Completed or HubPullFileState.Cached ? task.MaxValue : p.FileBytes;
                });
                result = await cache.PullAsync(repo, revision, include, exclude, progress, token);
            });
        return result;
    }

    private static Command Ls()
    {
        var command = new Command("ls", "Cached repositories, their revisions and sizes");
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, (services, _) =>
        {
            var cache = services.GetRequiredService<HubCache>();
            var repos = cache.ListCached();
            Console.Out.WriteLine($"cache: {cache.CacheDirectory}");
            foreach (var repo in repos)
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{repo.RepoId}  {repo.SizeOnDisk / 1e6:F1} MB  {repo.LastModifiedUtc:yyyy-MM-dd HH:mm}Z"));
                foreach (var rev in repo.Revisions)
                {
                    var refs = rev.Refs.Count > 0 ? " (" + string.Join(", ", rev.Refs) + ")" : string.Empty;
                    Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {rev.Commit}{refs}: {rev.FileCount} files, {rev.Size / 1e6:F1} MB"));
                }
            }
            if (repos.Count == 0)
            {
                Console.Out.WriteLine("(empty)");
            }
            return Task.FromResult(0);
        }, ct));
        return command;
    }
}
