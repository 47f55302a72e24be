using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Host.Serving;
using SensMerging.Host.Serving.Web;
using Microsoft.Extensions.Options;
using SensMerging.Hub.Server;
using SensMerging.Hub.Server.Auth;
using SensMerging.Hub.Server.Store;
using SensMerging.Registry;

namespace SensMerging.Host.Cli;

/// <summary>
/// <c>sensmerge serve [--urls URL] [--repos DIR] [--store DIR] [--tokens FILE] [--reads open|token]</c>: the Hub API over
/// pushed repositories (uploads with write tokens, <c>docs/team-hub.md</c>), local repositories and merged models, and on
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
        var store = new Option<DirectoryInfo?>("--store") { Description = "Where pushed repositories are stored (default: hub-store/ beside the registry file)" };
        var tokens = new Option<FileInfo?>("--tokens") { Description = "Token file (sensmerge tokens create): write-scope tokens may push; without it every upload is refused" };
        var reads = new Option<string>("--reads") { Description = "open (default): anyone may read; token: every request needs a token from --tokens", DefaultValueFactory = _ => "open" };
        reads.AcceptOnlyFromAmong("open", "token");
        var lease = new Option<double>("--registry-lease") { Description = "Seconds a client recording a merge in the shared registry may go without renewing its lease before the record is marked failed", DefaultValueFactory = _ => 30 };
        var command = new Command("serve", "Serve models over the Hugging Face Hub protocol: pushed repositories (uploads with --tokens), --repos folders and the registry's merged models as merges/<id>, with web pages (/) and /api/registry on the same port")
        {
            urls, repos, noRegistry, store, tokens, reads, lease,
        };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var loggerFactory = services.GetRequiredService<ILoggerFactory>();
            var tokenFile = parse.GetValue(tokens) is { } t ? new HubTokenFile(t.FullName) : null;
            if (tokenFile is not null && !File.Exists(tokenFile.FilePath))
            {
                throw new FileNotFoundException($"token file '{tokenFile.FilePath}' does not exist (create one with: sensmerge tokens create NAME --scope write --file {tokenFile.FilePath})");
            }
            bool readsNeedToken = parse.GetValue(reads) == "token";
            if (readsNeedToken && tokenFile is null)
            {
                throw new ArgumentException("--reads token needs --tokens FILE");
            }
            var registrySetting = services.GetRequiredService<IOptions<SensMergeOptions>>().Value.RegistryPath;
            if (SensMerging.Registry.Remote.RemoteMergeRegistry.IsRemote(registrySetting))
            {
                throw new ArgumentException($"serve keeps the registry it shares: give it a registry file, not '{registrySetting}'");
            }
            if (parse.GetValue(lease) is not (>= 1 and <= 86400))
            {
                throw new ArgumentException("--registry-lease must be between 1 and 86400 seconds");
            }
            var registryPath = Path.GetFullPath(registrySetting);
            var storeRoot = parse.GetValue(store)?.FullName ?? Path.Combine(Path.GetDirectoryName(registryPath)!, "hub-store");
            var uploads = new HubRepositoryStore(storeRoot, loggerFactory.CreateLogger<HubRepositoryStore>());
            var sources = new List<IHubRepositorySource> { new StoreRepositorySource(uploads, token => tokenFile?.Validate(token) is not null) };
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
            var hub = new CompositeRepositorySource(sources);
            var options = new HubServerOptions { Url = parse.GetValue(urls)!, Store = uploads, Tokens = tokenFile, ReadsNeedToken = readsNeedToken };
            if (!parse.GetValue(noRegistry))
            {
                var ui = services.GetRequiredService<RegistryWebUi>();
                var registry = services.GetRequiredService<IMergeRegistry>();
                var leaseTime = TimeSpan.FromSeconds(parse.GetValue(lease));
                options.MapAdditionalEndpoints = endpoints =>
                {
                    ui.Map(endpoints, hub, folders);
                    RegistryRemoteApi.Map(endpoints, registry, tokenFile, leaseTime);
                };
            }
            await using var server = await HubServer.StartAsync(hub, options, loggerFactory, token);
            Console.Out.WriteLine($"serving on {server.Endpoint} (set HF_ENDPOINT={server.Endpoint} for Hub clients); Ctrl-C stops");
            Console.Out.WriteLine(tokenFile is null
                ? $"uploads: refused (start with --tokens FILE to accept pushes into {uploads.Root})"
                : $"uploads: write tokens from {tokenFile.FilePath}, stored in {uploads.Root}; reads: {(readsNeedToken ? "token" : "open")}");
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
