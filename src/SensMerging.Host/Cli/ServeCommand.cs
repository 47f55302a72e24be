using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Host.Serving;
using SensMerging.Host.Serving.Web;
using SensMerging.Hub.Server;
using SensMerging.Registry;

namespace SensMerging.Host.Cli;

/// <summary>
/// <c>sensmerge serve [--urls URL] [--repos DIR]</c>: the Hub read API over local repositories and merged models, and on
/// the same port the registry's web pages and <c>/api/registry</c> JSON (unless <c>--no-registry</c>).
/// </summary>
public static class ServeCommand
{
    public const string DefaultUrl = "http://127.0.0.1:5080";

    /// <summary>How long requests in flight may take to finish once a signal stops the server.</summary>
    public static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(5);

    public static Command Create()
    {
        var urls = new Option<string>("--urls") { Description = "Address to listen on (loopback by default)", DefaultValueFactory = _ => DefaultUrl };
        var repos = new Option<DirectoryInfo?>("--repos") { Description = "Folder of local repositories DIR/org/name/ to serve" };
        var noRegistry = new Option<bool>("--no-registry") { Description = "Do not serve the registry's merged models, pages and /api/registry" };
        var command = new Command("serve", "Serve models over the Hugging Face Hub protocol (read-only): --repos folders and the registry's merged models as merges/<id>, with web pages (/) and /api/registry on the same port")
        {
            urls, repos, noRegistry,
        };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var sources = new List<IHubRepositorySource>();
            var folderRoot = parse.GetValue(repos)?.FullName;
            FolderRepositorySource? folders = null;
            if (folderRoot is not null)
            {
                folders = new FolderRepositorySource(folderRoot);
                sources.Add(folders);
            }
            if (!parse.GetValue(noRegistry))
            {
                var snapshotter = folders ?? new FolderRepositorySource(Path.GetTempPath());
                sources.Add(new RegistryRepositorySource(services.GetRequiredService<IMergeRegistry>(), snapshotter.SnapshotFolderAsync));
            }
            if (sources.Count == 0)
            {
                throw new ArgumentException("nothing to serve: give --repos DIR or leave the registry on");
            }
            var loggerFactory = services.GetRequiredService<ILoggerFactory>();
            var hub = new CompositeRepositorySource(sources);
            var options = new HubServerOptions { Url = parse.GetValue(urls)! };
            if (!parse.GetValue(noRegistry))
            {
                var ui = services.GetRequiredService<RegistryWebUi>();
                options.MapAdditionalEndpoints = endpoints => ui.Map(endpoints, hub, folders);
            }
            await using var server = await HubServer.StartAsync(hub, options, loggerFactory, token);
            Console.Out.WriteLine($"serving on {server.Endpoint} (set HF_ENDPOINT={server.Endpoint} for Hub clients); Ctrl-C stops");
            try
            {
                await Task.Delay(Timeout.Infinite, token);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                // SIGINT/SIGTERM: a graceful stop (requests in flight get up to StopGrace to finish), then exit 0.
                using var grace = new CancellationTokenSource(StopGrace);
                await server.StopAsync(grace.Token);
                Console.Out.WriteLine("stopped");
            }
            return ExitCodes.Success;
        }, ct));
        return command;
    }
}
