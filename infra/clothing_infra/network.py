"""A dedicated VPC: private subnets for the nodes, public subnets for the load balancer."""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws


def subnet_blocks(vpc_cidr: str, az_count: int) -> tuple[list[str], list[str]]:
    """Split the VPC into one large private and one small public block per availability zone."""
    network = ipaddress.IPv4Network(vpc_cidr)
    # Eight equal blocks: the first az_count hold the nodes' and pods' addresses (the VPC CNI
    # gives every pod a VPC address); the last is cut in eight for the load balancers and NAT.
    blocks = list(network.subnets(prefixlen_diff=3))
    private = [str(block) for block in blocks[:az_count]]
    public = [str(block) for block in list(blocks[-1].subnets(prefixlen_diff=3))[:az_count]]
    return private, public


class Network(pulumi.ComponentResource):
    """VPC over several AZs, tagged so Kubernetes can place internet-facing load balancers."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        *,
        cidr: str,
        az_count: int,
        cluster_name: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_tag = {f"kubernetes.io/cluster/{cluster_name}": "shared"}
        zones = aws.get_availability_zones_output(
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOutputOptions(parent=self),
        )

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{cluster_name}-vpc"},
            opts=child,
        )
        # AWS creates a default security group that allows all traffic between its members;
        # adopting it with no rules leaves it empty.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-unused"}, opts=child
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-igw"}, opts=child
        )
        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags={"Name": f"{cluster_name}-public"},
            opts=child,
        )

        private_blocks, public_blocks = subnet_blocks(cidr, az_count)
        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for index in range(az_count):
            zone = zones.names[index]
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                cidr_block=public_blocks[index],
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={
                    "Name": f"{cluster_name}-public-{index}",
                    "kubernetes.io/role/elb": "1",
                    **cluster_tag,
                },
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}",
                subnet_id=public.id,
                route_table_id=public_routes.id,
                opts=child,
            )
            public_subnets.append(public)
            private_subnets.append(
                aws.ec2.Subnet(
                    f"{name}-private-{index}",
                    vpc_id=vpc.id,
                    cidr_block=private_blocks[index],
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags={
                        "Name": f"{cluster_name}-private-{index}",
                        "kubernetes.io/role/internal-elb": "1",
                        **cluster_tag,
                    },
                    opts=child,
                )
            )

        # One NAT gateway keeps the default stack cheap; nodes in other zones reach the
        # internet through it (pulling images, the gateway fetching photo URLs).
        nat_ip = aws.ec2.Eip(
            f"{name}-nat", domain="vpc", tags={"Name": f"{cluster_name}-nat"}, opts=child
        )
        nat = aws.ec2.NatGateway(
            f"{name}-nat",
            allocation_id=nat_ip.id,
            subnet_id=public_subnets[0].id,
            tags={"Name": f"{cluster_name}-nat"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
        )
        private_routes = aws.ec2.RouteTable(
            f"{name}-private",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
            tags={"Name": f"{cluster_name}-private"},
            opts=child,
        )
        for index, subnet in enumerate(private_subnets):
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}",
                subnet_id=subnet.id,
                route_table_id=private_routes.id,
                opts=child,
            )

        self.vpc_id = vpc.id
        self.private_subnet_ids = [subnet.id for subnet in private_subnets]
        self.public_subnet_ids = [subnet.id for subnet in public_subnets]
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "private_subnet_ids": self.private_subnet_ids,
                "public_subnet_ids": self.public_subnet_ids,
            }
        )
