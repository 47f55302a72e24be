using System.CommandLine;
using System.Globalization;
using SensMerging.Hub.Server.Auth;

namespace SensMerging.Host.Cli;

/// <summary>
/// <c>sensmerge tokens create NAME --scope read|write --file FILE</c>, <c>tokens list --file FILE</c>,
/// <c>tokens revoke NAME --file FILE</c>: the bearer tokens <c>serve --tokens FILE</c> accepts. A new token is printed
/// once, on the last line; the file keeps only its SHA-256 with the name and scope.
/// </summary>
public static class TokensCommand
{
    public static Command Create() => new("tokens", "Bearer tokens for serve --tokens FILE (stored as hashes; write scope uploads, read scope reads)")
    {
        CreateToken(), List(), Revoke(),
    };

    private static Option<FileInfo> FileOption() => new("--file") { Description = "The token file (JSON; created when absent)", Required = true };

    private static Command CreateToken()
    {
        var name = new Argument<string>("name") { Description = "Who the token is for (letters, digits, '.', '_', '-'); shown as the commit author" };
        var scope = new Option<string>("--scope") { Description = "read or write", DefaultValueFactory = _ => "read" };
        scope.AcceptOnlyFromAmong("read", "write");
        var file = FileOption();
        var command = new Command("create", "Create a token; it is printed once, on the last line, and only its hash is stored") { name, scope, file };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (_, token) =>
        {
            var tokens = new HubTokenFile(parse.GetValue(file)!.FullName);
            var s = parse.GetValue(scope) == "write" ? HubTokenScope.Write : HubTokenScope.Read;
            var secret = await tokens.CreateAsync(parse.GetValue(name)!, s, token);
            Console.Out.WriteLine($"token '{parse.GetValue(name)}' ({ScopeText(s)}) added to {tokens.FilePath}; it is shown only now:");
            Console.Out.WriteLine(secret);
            return ExitCodes.Success;
        }, ct));
        return command;
    }

    private static Command List()
    {
        var file = FileOption();
        var command = new Command("list", "The tokens in the file: name, scope, creation time (never the token)") { file };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, (_, _) =>
        {
            var tokens = new HubTokenFile(parse.GetValue(file)!.FullName);
            var entries = tokens.List();
            foreach (var e in entries)
            {
                Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{e.Name}\t{ScopeText(e.Scope)}\t{e.CreatedAt.UtcDateTime:yyyy-MM-dd HH:mm}Z"));
            }

            if (entries.Count == 0)
            {
                Console.Out.WriteLine("(no tokens)");
            }

            return Task.FromResult(ExitCodes.Success);
        }, ct));
        return command;
    }

    private static Command Revoke()
    {
        var name = new Argument<string>("name") { Description = "The token's name" };
        var file = FileOption();
        var command = new Command("revoke", "Remove a token; a running serve refuses it at once") { name, file };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (_, token) =>
        {
            var tokens = new HubTokenFile(parse.GetValue(file)!.FullName);
            if (!await tokens.RevokeAsync(parse.GetValue(name)!, token))
            {
                throw new ArgumentException($"no token named '{parse.GetValue(name)}' in {tokens.FilePath}");
            }

            Console.Out.WriteLine($"token '{parse.GetValue(name)}' revoked");
            return ExitCodes.Success;
        }, ct));
        return command;
    }

    private static string ScopeText(HubTokenScope scope) => scope == HubTokenScope.Write ? "write" : "read";
}
