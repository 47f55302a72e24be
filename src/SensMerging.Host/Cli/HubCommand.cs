using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Host.Serving;
using SensMerging.Hub.Client;
using SensMerging.Registry;
using Spectre.Console;

namespace SensMerging.Host.Cli;

/// <summary><c>sensmerge hub pull ORG/NAME[@REV]</c>, <c>sensmerge hub push SOURCE ORG/NAME</c> and <c>sensmerge hub ls</c>.</summary>
public static class HubCommand
{
    public static Command Create() => new("hub", "Pull models from a Hugging Face Hub (HF_ENDPOINT) into the shared cache, push folders and merges to it, and list the cache") { Pull(), Push(), Ls() };

    private static Command Push()
    {
        var source = new Argument<string>("source") { Description = "A folder, or a recorded merge: merges/<id> (or the record id)" };
        var repo = new Argument<string>("repo") { Description = "org/name on the Hub (HF_ENDPOINT; created when absent)" };
        var revision = new Option<string>("--revision") { Description = "Branch to commit to (created when absent)", DefaultValueFactory = _ => "main" };
        var message = new Option<string?>("--message") { Description = "Commit message" };
        var isPrivate = new Option<bool>("--private") { Description = "Create the repository private" };
        var command = new Command("push", "Upload a folder or a merged model over the Hub upload protocol (HF_ENDPOINT, HF_TOKEN); run again to resume: only what the Hub lacks is sent")
        {
            source, repo, revision, message, isPrivate,
        };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var text = parse.GetValue(source)!;
            string folder;
            MergeRecord? record = null;
            if (Directory.Exists(text))
            {
                folder = Path.GetFullPath(text);
            }
            else
            {
                var id = text.StartsWith(RegistryRepositorySource.Organization + "/", StringComparison.Ordinal) ? text[(RegistryRepositorySource.Organization.Length + 1)..] : text;
                var registry = services.GetRequiredService<IMergeRegistry>();
                record = await registry.GetAsync(id, token)
                    ?? throw new ArgumentException($"'{text}' is neither a folder nor a recorded merge (merges/<id>)");
                if (record.Status != MergeStatus.Succeeded || record.Outputs?.Folder is not { } output || !Directory.Exists(output))
                {
                    throw new ArgumentException($"merge {record.Id} has no output folder to push (status {record.Status.ToString().ToLowerInvariant()}{(record.Outputs?.Folder is { } f ? $", folder '{f}' missing" : string.Empty)})");
                }
                folder = output;
            }
            var uploader = services.GetRequiredService<HubUploader>();
            var commitMessage = parse.GetValue(message) ?? (record is null ? null : $"Merge {record.Id} ({MergeSummary.MethodName(record)}) pushed with sensmerge");
            var result = await uploader.PushFolderAsync(folder, parse.GetValue(repo)!, parse.GetValue(revision), commitMessage, parse.GetValue(isPrivate), token);
            var endpoint = services.GetRequiredService<HubOptions>().Endpoint;
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{result.Files} files: {result.LfsUploaded} LFS objects uploaded ({result.BytesUploaded / 1e6:F1} MB), {result.LfsSkipped} already on the Hub, {result.InlineSkipped} small files unchanged"));
            if (record is not null)
            {
                var publication = new MergePublication(endpoint, result.RepoId, result.Branch, result.Commit, DateTime.UtcNow);
                await services.GetRequiredService<IMergeRegistry>().UpdateAsync(record.Id, r => r with { Publications = [.. r.Publications, publication] }, token);
                Console.Out.WriteLine($"recorded on merge {record.Id}");
            }
            Console.Out.WriteLine($"{endpoint}/{result.RepoId}@{result.Branch} -> {result.Commit}");
            return ExitCodes.Success;
        }, ct));
        return command;
    }

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
